"""The interactive 3D viewer that needs no internet: NiiVue in JupyterLab through ``ipyniivue``.

``ipyniivue`` (an anywidget) carries NiiVue's JavaScript inside its Python wheel, so the viewer loads from the
Jupyter server itself: it works in a hospital network or a workshop room without internet, where itkwidgets
(which fetches its viewer from the web at run time) falls back to static pictures. The browser draws with
WebGL (software rendering through SwiftShader is enough).

Every view is in the radiological convention (patient's right on the screen's left), with the orientation letters
on the slices' edges and an orientation cube in 3D (:data:`READING_OPTIONS`), as the suite's static figures.

- :func:`niivue_view`: one NiiVue widget, a CT (window preset as its display range) with its label map in the
  suite's organ colours (:data:`swinunetr_lib.viz.figures.BTCV_COLORS`), axial / coronal / sagittal and a 3D rendering.
- :func:`niivue_viewer`: the same with controls: window preset, layout, label opacity.
- :func:`niivue_compare`: the prediction against the ground truth, two linked views side by side (moving the
  crosshair or turning the 3D view in one moves the other).

Volumes are handed to the browser as in-memory NIfTI (``nibabel``), on the grid ``affine`` gives (default:
RAS with ``spacing`` mm voxels, as :mod:`swinunetr_lib.viz.figures` assumes). Arrays are (X, Y, Z).
"""
from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import nibabel as nib
import numpy as np

from .figures import BTCV_COLORS, BTCV_ORGANS, WINDOWS, as_volume, label_color, organ_name, window_bounds

LAYOUTS = {"multiplanar": "MULTIPLANAR", "axial": "AXIAL", "coronal": "CORONAL", "sagittal": "SAGITTAL",
           "3d": "RENDER"}
"""Layout name -> ipyniivue ``SliceType`` member (``multiplanar``: the three planes and the 3D rendering)."""


READING_OPTIONS: dict[str, Any] = {
    "is_radiological_convention": True,   # patient's right on the screen's left, as every CT figure of the suite
                                          # and every radiology workstation (NiiVue's default is neurological)
    "is_orientation_text_visible": True,  # the orientation letters (R/L, A/P, S/I) at the edges of each slice
    "show_all_orientation_markers": True,  # on all four edges, not only the left and top ones
    "font_color": (1.0, 1.0, 1.0, 1.0),   # white letters (NiiVue's default grey is hard to read on a CT)
    "font_size_scaling": 0.6,             # larger than NiiVue's 0.4
    "is_orient_cube": True,               # the 3D view's orientation cube, lettered
}
"""NiiVue options (``ipyniivue.NiiVue`` keyword arguments) every view of this module sets, so a slice reads like a
radiology workstation's."""


def niivue_status() -> tuple[bool, str]:
    """Whether the NiiVue viewer can be used here (``ipyniivue`` importable), and why not."""
    if importlib.util.find_spec("ipyniivue") is None:
        return False, "ipyniivue is not installed (pip install ipyniivue==2.4.4)"
    try:
        import ipyniivue  # noqa: F401, PLC0415 — only whether it imports: optional, may be broken
    except Exception as err:  # a broken install must not break the notebook
        return False, f"ipyniivue failed to import ({type(err).__name__}: {err})"
    return True, "ipyniivue available (its JavaScript ships in the wheel: works offline)"


def window_range(preset: str | tuple[float, float] = "abdomen") -> tuple[float, float]:
    """``(low, high)`` HU of a window preset of :data:`~swinunetr_lib.viz.figures.WINDOWS` or a ``(width, level)``
    pair: NiiVue's display range (``cal_min``, ``cal_max``)."""
    return window_bounds(preset)


def _affine(spacing: Sequence[float], affine: Any) -> np.ndarray:
    if affine is not None:
        out = np.asarray(affine, dtype=np.float64)
        if out.shape != (4, 4):
            raise ValueError(f"affine must be 4 x 4, got shape {out.shape}")
        return out
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {tuple(spacing)}")
    return np.diag([*(float(s) for s in spacing), 1.0])


def nifti_bytes(volume: np.ndarray, affine: np.ndarray, *, label: bool = False) -> bytes:
    """``volume`` (X, Y, Z) as the bytes of a gzipped NIfTI-1 file: uint8 (or int16) for a label map; int16 for
    whole-number intensities that fit (CT in HU), else float32."""
    arr = np.asarray(volume)
    if label:
        arr = arr.astype(np.uint8 if arr.size == 0 or int(arr.max()) < 256 else np.int16)
    elif np.issubdtype(arr.dtype, np.integer) or (np.all(np.isfinite(arr)) and np.array_equal(arr, np.round(arr))):
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        arr = arr.astype(np.int16 if -32768 <= lo and hi <= 32767 else np.float32)
    else:
        arr = arr.astype(np.float32)
    img = nib.Nifti1Image(np.ascontiguousarray(arr), affine)
    if label:
        img.header.set_intent("label")
    return gzip.compress(img.to_bytes(), compresslevel=1)


def label_lut(label_ids: Sequence[int], *, colors: Mapping[int, tuple[int, int, int]] = BTCV_COLORS,
              names: Mapping[int, str] = BTCV_ORGANS) -> dict[str, list]:
    """NiiVue label colormap (``R``, ``G``, ``B``, ``A`` in 0..255, ``I`` ids, ``labels`` names) for ids
    0..max(``label_ids``): 0 transparent, every organ in its suite colour and named as in every figure."""
    top = max([0, *(int(i) for i in label_ids)])
    ids = list(range(top + 1))
    rgb = [(0.0, 0.0, 0.0)] + [tuple(float(round(255 * c)) for c in label_color(i, colors)) for i in ids[1:]]
    return {"R": [c[0] for c in rgb], "G": [c[1] for c in rgb], "B": [c[2] for c in rgb],
            "A": [0.0] + [255.0] * top, "I": [float(i) for i in ids],
            "labels": ["background"] + [organ_name(i, names) for i in ids[1:]]}


def _slice_type(layout: str) -> Any:
    from ipyniivue import SliceType  # noqa: PLC0415 — optional viewer; the module imports without it

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    return getattr(SliceType, LAYOUTS[layout])


def niivue_view(image: Any, label: Any = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: Any = None,
                window_preset: str | tuple[float, float] = "abdomen", label_opacity: float = 0.5,
                layout: str = "multiplanar", height: int = 420, grid: bool = False, name: str = "ct") -> Any:
    """An ``ipyniivue.NiiVue`` widget of ``image`` (X, Y, Z, HU) with ``label`` (X, Y, Z class ids) on top.

    The CT is shown in grey within the window (``cal_min``/``cal_max`` = the preset's HU range), the labels in
    the suite's organ colours at ``label_opacity`` with a legend; ``layout`` is ``multiplanar`` (three planes and
    a 3D rendering; as a 2 x 2 ``grid`` for a narrow view), ``axial``, ``coronal``, ``sagittal`` or ``3d``.
    Volumes are ``nv.volumes[0]`` (CT) and ``nv.volumes[1]`` (labels).
    """
    from ipyniivue import MultiplanarType, NiiVue, Volume  # noqa: PLC0415 — optional viewer (niivue_status)

    img = as_volume(image, "image")
    lab = None if label is None else as_volume(label, "label")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {img.shape}")
    if not 0.0 <= float(label_opacity) <= 1.0:
        raise ValueError(f"label_opacity must be within [0, 1], got {label_opacity}")
    aff = _affine(spacing, affine)
    lo, hi = window_range(window_preset)
    nv = NiiVue(height=int(height), slice_type=_slice_type(layout), back_color=(0.0, 0.0, 0.0, 1.0),
                is_colorbar=False, show_legend=True, multiplanar_force_render=layout == "multiplanar",
                multiplanar_layout=MultiplanarType.GRID if grid else MultiplanarType.AUTO, **READING_OPTIONS)
    volumes = [Volume(data=nifti_bytes(img, aff), name=f"{name}.nii.gz", colormap="gray", cal_min=lo, cal_max=hi,
                      colorbar_visible=False)]
    if lab is not None:
        seg = Volume(data=nifti_bytes(lab, aff, label=True), name=f"{name}_labels.nii.gz",
                     opacity=float(label_opacity), colorbar_visible=False)
        seg.set_colormap_label(label_lut(np.unique(lab).tolist()))
        volumes.append(seg)
    nv.load_volumes(volumes)
    return nv


def _window_control(views: Sequence[Any], window_preset: str | tuple[float, float]) -> Any:
    """A dropdown of the window presets that sets the CT display range of every view in ``views``."""
    options = list(WINDOWS) if isinstance(window_preset, str) else ["custom", *WINDOWS]
    choice = w.Dropdown(options=options, value=window_preset if isinstance(window_preset, str) else "custom",
                        description="window", layout=w.Layout(width="200px"))

    def apply(change: Any) -> None:
        if change["new"] in WINDOWS:
            lo, hi = window_range(change["new"])
            for nv in views:
                nv.volumes[0].cal_min, nv.volumes[0].cal_max = lo, hi

    choice.observe(apply, names="value")
    return choice


def niivue_viewer(image: Any, label: Any = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: Any = None,
                  window_preset: str | tuple[float, float] = "abdomen", label_opacity: float = 0.5,
                  layout: str = "multiplanar", height: int = 420) -> Any:
    """:func:`niivue_view` with controls above it: window preset, layout and label opacity.
    Returns an ``ipywidgets.VBox`` whose last child is the ``NiiVue`` widget."""
    nv = niivue_view(image, label, spacing=spacing, affine=affine, window_preset=window_preset,
                     label_opacity=label_opacity, layout=layout, height=height)
    controls = [_window_control([nv], window_preset)]
    view = w.Dropdown(options=list(LAYOUTS), value=layout, description="layout", layout=w.Layout(width="220px"))
    view.observe(lambda change: nv.set_slice_type(_slice_type(change["new"])), names="value")
    controls.append(view)
    if label is not None:
        opacity = w.FloatSlider(value=float(label_opacity), min=0.0, max=1.0, step=0.05, description="labels")
        opacity.observe(lambda change: setattr(nv.volumes[1], "opacity", float(change["new"])), names="value")
        controls.append(opacity)
    return w.VBox([w.HBox(controls), nv])


def niivue_compare(image: Any, prediction: Any, truth: Any, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   affine: Any = None, window_preset: str | tuple[float, float] = "abdomen",
                   label_opacity: float = 0.5, layout: str = "multiplanar", height: int = 480) -> Any:
    """The ground truth (left) and the prediction (right) on the same CT, two linked NiiVue views: the
    crosshair and the 3D camera of one follow the other (``NiiVue.broadcast_to``); one window control for both.
    Returns an ``ipywidgets.VBox``; the views are its last child's children."""
    kw = dict(spacing=spacing, affine=affine, window_preset=window_preset, label_opacity=label_opacity,
              layout=layout, height=height, grid=True)
    pred, lab = as_volume(prediction, "prediction"), as_volume(truth, "truth")
    if pred.shape != lab.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {lab.shape}")
    views = [niivue_view(image, lab, name="truth", **kw), niivue_view(image, pred, name="prediction", **kw)]
    sync = {"2d": True, "3d": True}
    views[0].broadcast_to(views[1], sync)
    views[1].broadcast_to(views[0], sync)
    titles = [w.HTML(f"<b>{t}</b>") for t in ("ground truth", "prediction")]
    panes = [w.VBox([t, v], layout=w.Layout(width="50%")) for t, v in zip(titles, views, strict=True)]
    return w.VBox([_window_control(views, window_preset), w.HBox(panes)])
