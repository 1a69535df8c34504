"""Command line: ``python -m swinunetr_lib.data {validate,build-manifest,demo-cohort,dicom-to-nifti,prepare} ...``.

Examples::

    python -m swinunetr_lib.data validate data/demo_cohort/finetune.json --root data/demo_cohort
    python -m swinunetr_lib.data build-manifest /data/Task09_Spleen --layout decathlon --n-folds 5 --out spleen.json
    python -m swinunetr_lib.data demo-cohort --n-phantoms 12 --seed 0
    python -m swinunetr_lib.data dicom-to-nifti path/to/series ct.nii.gz --orientation RAS
    python -m swinunetr_lib.data prepare data/ct/pretrain.json --out data/prepared --spacing 1.5,1.5,1.5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..paths import absolute_from_cwd
from ..utils.cli import run_cli
from .cohort import DemoCohortConfig
from .dicom import DicomError, check_nifti_out, dicom_to_nifti, locate_series, parse_orientation
from .manifest import (
    build_manifest,
    check_output_file,
    detect_layout,
    fraction_manifest_path,
    labeled_fraction_subsets,
    parse_fractions,
    write_manifest,
)
from .prepare import PrepareConfig, prepare
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
    p.add_argument("--layout", default="auto", choices=["auto", "decathlon", "btcv", "flat"],
                   help="btcv: img/ + label/, RawData/Training/ + RawData/Testing/ (from the folder holding RawData/, "
                        "RawData/ or RawData/Training/) or imagesTr/img0001 + labelsTr/label0001 + imagesTs/; "
                        "decathlon: imagesTr/ + labelsTr/ + imagesTs/ (MSD); flat: every NIfTI but label maps, "
                        "unlabeled (pretraining); auto: the first that fits")
    p.add_argument("--out", required=True, help="manifest JSON to write (paths inside are relative to ROOT)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modality", default="CT")
    p.add_argument("--fractions", default=None, help="comma list, e.g. 0.1,0.25,0.5,1: also write OUT_fracNN.json")
    p.add_argument("--allow-missing", action="store_true",
                   help="when the dataset's own list (dataset.json / dataset_0.json) names images that are not on "
                        "disk, build the manifest from the cases found (and name the others) instead of stopping")

    p = sub.add_parser("demo-cohort", help="build the demo cohort (real example CT + phantoms); idempotent")
    DemoCohortConfig.add_arguments(p)

    p = sub.add_parser("dicom-to-nifti", help="convert one CT DICOM series folder to NIfTI (HU)")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--orientation", default="RAS", help="axis codes, e.g. RAS or LAS; 'none' keeps the reader's")
    p.add_argument("--series-uid", default=None)

    p = sub.add_parser("prepare", help="once, in parallel: each CT as a memory-mappable int16 array cut to the body "
                                       "(resumable), for pretraining at scale (pretrain --prepared-dir OUT)")
    p.add_argument("manifest", help="decathlon-style JSON of the CTs (e.g. from build-manifest --layout flat)")
    PrepareConfig.add_arguments(p)

    args = parser.parse_args(argv)
    commands = {"validate": _validate, "build-manifest": _build_manifest, "demo-cohort": _demo_cohort,
                "dicom-to-nifti": _dicom_to_nifti, "prepare": _prepare}
    return run_cli(f"{parser.prog} {args.command}", lambda: commands[args.command](args))


def _validate(args: argparse.Namespace) -> int:
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    if Path(args.manifest).is_dir():
        raise ValueError(f"manifest {args.manifest} is a directory, not a JSON file")
    if args.root is not None and Path(args.root).exists() and not Path(args.root).is_dir():
        raise ValueError(f"--root {args.root} is not a folder")
    report = validate_manifest(args.manifest, args.root, modality=args.modality, num_classes=args.num_classes)
    print(report)
    if args.table:
        print(report.table().to_string())
    return 0 if report.ok else 1


def _build_manifest(args: argparse.Namespace) -> int:
    # everything is checked (and every manifest built in memory) before the first file is written
    if args.n_folds < 1:
        raise ValueError(f"--n-folds must be >= 1, got {args.n_folds}")
    check_output_file(args.out, "--out")
    fracs = parse_fractions(args.fractions, "--fractions") if args.fractions is not None else []
    for f in fracs:
        check_output_file(fraction_manifest_path(args.out, f), "--fractions output")
    m = build_manifest(args.root, args.layout, n_folds=args.n_folds, seed=args.seed, modality=args.modality,
                       allow_missing=args.allow_missing)
    missing = m.pop("missing_from_datalist", [])
    subsets = {}
    if fracs:
        if not any("label" in e for e in m["training"]):
            layout = detect_layout(args.root) if args.layout == "auto" else args.layout
            raise ValueError(f"--fractions: {args.root} has no labeled training entries ({layout} layout); "
                             "labeled fractions need image/label pairs")
        subsets = labeled_fraction_subsets(m["training"], fracs, seed=args.seed)
    out = write_manifest(m, args.out)
    layout = detect_layout(args.root) if args.layout == "auto" else args.layout
    labeled = sum("label" in e for e in m["training"] + m.get("validation", []))
    parts = [f"{len(m['training'])} training"]
    if m.get("validation"):
        parts.append(f"{len(m['validation'])} validation (the dataset's own split)")
    parts.append(f"{len(m.get('test', []))} test entries")
    classes = f", {len(m['labels'])} classes" if "labels" in m else ""
    hint = "" if out.resolve().parent == Path(args.root).resolve() else " (give finetune/pretrain --data-root)"
    print(f"wrote {out}: {', '.join(parts)}; {labeled} labeled{classes} ({layout} layout); paths relative to "
          f"{args.root}{hint}")
    if missing:
        print(f"note: {len(missing)} image(s) of the dataset's own list are not on disk and left out (--allow-missing):"
              f" {', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}")
    unpaired = [e["image"] for e in m["training"] + m.get("validation", []) if "label" not in e]
    if unpaired and layout != "flat":
        print(f"note: {len(unpaired)} image(s) have no label, e.g. {unpaired[0]}")
    for f, subset in subsets.items():
        path = write_manifest({**m, "labeled_fraction": f, "numTraining": len(subset), "training": subset},
                              fraction_manifest_path(args.out, f))
        print(f"wrote {path}: {len(subset)} labeled entries ({f:.0%})")
    return 0


def _demo_cohort(args: argparse.Namespace) -> int:
    cohort = DemoCohortConfig.from_args(args).build()
    print(f"demo cohort at {cohort.root}")
    for name, path in cohort.manifests().items():
        print(f"  {name}: {path}")
    return 0


def _dicom_to_nifti(args: argparse.Namespace) -> int:
    check_nifti_out(args.out, "OUT")
    orient = parse_orientation(args.orientation, "--orientation")
    if not Path(args.folder).is_dir():
        raise DicomError(f"FOLDER {args.folder} is not a folder")
    folder, note = locate_series(args.folder, args.series_uid)  # the top of a TCIA download tree: its CT series
    if note:
        print(note)
    r = dicom_to_nifti(folder, args.out, orientation=orient, series_uid=args.series_uid)
    print(f"wrote {r.path}: shape {r.shape}, spacing {r.spacing} mm, {r.orientation}, "
          f"HU [{r.hu_min:g}, {r.hu_max:g}]")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    args = absolute_from_cwd(args, "manifest", "out", "data_root")
    cfg = PrepareConfig.from_args(args)
    res = prepare(args.manifest, cfg)
    entries = res[cfg.split]
    gb = sum(np_bytes(e["shape"], cfg.dtype) for e in entries) / 1e9
    print(f"wrote {Path(cfg.out) / 'prepared.json'}: {len(entries)} volumes, {gb:.2f} GB "
          f"({cfg.dtype}, cut to the body); pretrain with --prepared-dir {cfg.out}")
    return 0


def np_bytes(shape: list[int], dtype: str) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return 2 * n  # int16 and float16


if __name__ == "__main__":
    sys.exit(main())
