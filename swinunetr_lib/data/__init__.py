"""Data curation: DICOM -> NIfTI, label remapping, phantoms, dataset registry, manifests, validation, demo cohort.

See each module's docstring for its API; the names below are re-exported for convenience.
"""
from .cohort import DemoCohort, DemoCohortConfig, build_demo_cohort
from .dicom import DicomError, dicom_to_nifti, read_dicom_series
from .labels import BTCV_LABELS, build_remap, remap_labels, totalseg_to_btcv
from .manifest import (
                       assign_folds,
                       build_manifest,
                       labeled_fraction_subsets,
                       load_manifest,
                       resolve_entries,
                       split_fold,
                       write_manifest,
)
from .phantom import Phantom, make_abdomen_phantom, make_msd_phantom, write_phantom
from .registry import dataset_info, load_registry, registry_table
from .validate import Problem, ValidationReport, validate_manifest

__all__ = [
    "BTCV_LABELS", "DemoCohort", "DemoCohortConfig", "DicomError", "Phantom", "Problem", "ValidationReport",
    "assign_folds", "build_demo_cohort", "build_manifest", "build_remap", "dataset_info", "dicom_to_nifti",
    "labeled_fraction_subsets", "load_manifest", "load_registry", "make_abdomen_phantom", "make_msd_phantom",
    "read_dicom_series", "registry_table", "remap_labels", "resolve_entries", "split_fold", "totalseg_to_btcv",
    "validate_manifest", "write_manifest", "write_phantom",
]
