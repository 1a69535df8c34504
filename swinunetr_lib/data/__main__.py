"""Command line: ``python -m swinunetr_lib.data {validate,build-manifest,demo-cohort,dicom-to-nifti} ...``.

Examples::

    python -m swinunetr_lib.data validate data/demo_cohort/finetune.json --root data/demo_cohort
    python -m swinunetr_lib.data build-manifest /data/Task09_Spleen --layout decathlon --n-folds 5 --out spleen.json
    python -m swinunetr_lib.data demo-cohort --n-phantoms 12 --seed 0
    python -m swinunetr_lib.data dicom-to-nifti path/to/series ct.nii.gz --orientation RAS
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError
from .cohort import DemoCohortConfig
from .dicom import DicomError, dicom_to_nifti
from .manifest import build_manifest, labeled_fraction_subsets, write_manifest
from .validate import validate_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swinunetr_lib.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="report every problem of a manifest (nothing is modified)")
    p.add_argument("manifest")
    p.add_argument("--root", default=None, help="data root; default: the manifest's folder")
    p.add_argument("--modality", default=None, help="e.g. CT (enables HU checks); default from the manifest")
    p.add_argument("--num-classes", type=int, default=None, help="task classes 0..N-1; default from 'labels'")
    p.add_argument("--table", action="store_true", help="also print the per-entry QC table")

    p = sub.add_parser("build-manifest", help="scan a folder into a decathlon-style manifest")
    p.add_argument("root")
    p.add_argument("--layout", default="auto", choices=["auto", "decathlon", "btcv", "flat"])
    p.add_argument("--out", required=True, help="manifest JSON to write (paths inside are relative to ROOT)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modality", default="CT")
    p.add_argument("--fractions", default=None, help="comma list, e.g. 0.1,0.25,0.5,1: also write OUT_fracNN.json")

    p = sub.add_parser("demo-cohort", help="build the demo cohort (real example CT + phantoms); idempotent")
    DemoCohortConfig.add_arguments(p)

    p = sub.add_parser("dicom-to-nifti", help="convert one CT DICOM series folder to NIfTI (HU)")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--orientation", default="RAS", help="axis codes, e.g. RAS or LAS; 'none' keeps the reader's")
    p.add_argument("--series-uid", default=None)

    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            report = validate_manifest(args.manifest, args.root, modality=args.modality, num_classes=args.num_classes)
            print(report)
            if args.table:
                print(report.table().to_string())
            return 0 if report.ok else 1
        if args.command == "build-manifest":
            m = build_manifest(args.root, args.layout, n_folds=args.n_folds, seed=args.seed, modality=args.modality)
            out = write_manifest(m, args.out)
            print(f"wrote {out}: {len(m['training'])} training entries ({args.layout} layout) relative to {args.root}")
            if args.fractions:
                fracs = [float(f) for f in args.fractions.split(",")]
                for f, subset in labeled_fraction_subsets(m["training"], fracs, seed=args.seed).items():
                    path = Path(args.out).with_name(Path(args.out).stem + f"_frac{int(round(f * 100))}.json")
                    write_manifest({**m, "labeled_fraction": f, "numTraining": len(subset), "training": subset}, path)
                    print(f"wrote {path}: {len(subset)} labeled entries ({f:.0%})")
            return 0
        if args.command == "demo-cohort":
            cohort = DemoCohortConfig.from_args(args).build()
            print(f"demo cohort at {cohort.root}")
            for name, path in cohort.manifests().items():
                print(f"  {name}: {path}")
            return 0
        if args.command == "dicom-to-nifti":
            orient = None if args.orientation.lower() == "none" else args.orientation
            r = dicom_to_nifti(args.folder, args.out, orientation=orient, series_uid=args.series_uid)
            print(f"wrote {r.path}: shape {r.shape}, spacing {r.spacing} mm, {r.orientation}, "
                  f"HU [{r.hu_min:g}, {r.hu_max:g}]")
            return 0
    except (ConfigError, DicomError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
