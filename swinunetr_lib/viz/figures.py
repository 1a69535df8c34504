"""Static figures for CT, labels, SSL views, learning curves and results (matplotlib, headless-safe).

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``, so no global figure
state leaks between calls and nothing needs a display; in Jupyter a returned figure is shown as a PNG.
:func:`figure_to_rgb` turns a figure into an ``(H, W, 3)`` uint8 array for image-based tests.

Volumes are ``(D, H, W)`` = ``(x, y, z)`` arrays in RAS orientation, as MONAI's ``LoadImage`` +
``Orientation("RAS")`` produce them (a torch tensor or a ``(1, D, H, W)`` / ``(1, 1, D, H, W)`` array is
squeezed). Slices are shown in the radiological convention: patient right on the image left, anterior
(axial) or superior (coronal, sagittal) at the top.

Labels use the 13 BTCV organs (Landman et al. 2015; Swin UNETR paper Sec. 4.1), one fixed colour each.
Learning curves and result charts are in :mod:`swinunetr_lib.viz.curves`, 3D and interactive views in
:mod:`swinunetr_lib.viz.surfaces`.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..utils.files import atomic_path
from ..utils.organs import BTCV_ORGANS  # the one BTCV organ table: id -> name shown in figures

# --------------------------------------------------------------------------------------------- colours
BTCV_COLORS: dict[int, tuple[int, int, int]] = {
    1: (170, 64, 170), 2: (170, 170, 0), 3: (191, 234, 0), 4: (21, 128, 0), 5: (0, 234, 255),
    6: (234, 128, 85), 7: (255, 170, 149), 8: (212, 0, 106), 9: (128, 106, 234), 10: (0, 170, 170),
    11: (255, 212, 128), 12: (149, 42, 255), 13: (149, 170, 255),
}
"""BTCV label id -> RGB (0-255). Fixed: every figure, test and notebook uses these colours. Chosen for colour-blind
viewers: the 13 colours keep a CIELAB distance (Delta E) of at least 20 between any two, with normal vision and as
simulated for protanopia, deuteranopia and tritanopia (:mod:`swinunetr_lib.viz.colour_vision`; the earlier tab20
colours fell to 4.6 under protanopia), each saturated enough to show over a grey CT."""

ERROR_COLORS: dict[str, tuple[float, float, float]] = {
    "missed (FN)": (86 / 255, 180 / 255, 233 / 255),    # Okabe-Ito sky blue
    "spurious (FP)": (213 / 255, 94 / 255, 0.0),        # Okabe-Ito vermillion
    "wrong organ": (240 / 255, 228 / 255, 66 / 255),    # Okabe-Ito yellow
}
"""Error-map colours (RGB in [0, 1]) from Okabe & Ito's colour-blind-safe set: apart for all four visions of
:mod:`swinunetr_lib.viz.colour_vision` (Delta E >= 33; the earlier red and orange fell to 25 for deuteranopia)."""

WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),   # W400/L40 -> HU [-160, 240]
    "btcv": (425.0, 37.5),      # HU [-175, 250], the intensity range of the paper's BTCV pipeline (Sec. 4.1)
    "lung": (1500.0, -600.0),   # HU [-1350, 150]
    "bone": (1800.0, 400.0),    # HU [-500, 1300]
}
"""CT window presets as ``(width, level)`` in Hounsfield units."""

SCALED_SOFT_TISSUE: tuple[float, float] = (0.2, 0.52)
"""The abdomen window (W400 / L40 HU) as ``(width, level)`` on intensities scaled from HU [-1000, 1000] to [0, 1]
(the pretraining input): [0.42, 0.62], where the organs of CT and the phantoms differ."""

AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""View name -> the array axis held fixed (RAS: x, y, z)."""


def label_color(label_id: int, colors: Mapping[int, tuple[int, int, int]] = BTCV_COLORS) -> tuple[float, float, float]:
    """RGB in [0, 1] of one label id; ids beyond the table get a deterministic tab20 colour."""
    if label_id in colors:
        return tuple(c / 255.0 for c in colors[label_id])  # type: ignore[return-value]
    return tuple(colormaps["tab20"](label_id % 20)[:3])  # type: ignore[return-value]


def label_colormap(num_classes: int = 14) -> ListedColormap:
    """A ``ListedColormap`` of ``num_classes`` entries: 0 transparent black, then the BTCV colours."""
    rgba = [(0.0, 0.0, 0.0, 0.0)] + [(*label_color(i), 1.0) for i in range(1, num_classes)]
    return ListedColormap(rgba, name="btcv")


def organ_name(label_id: int, names: Mapping[int, str] = BTCV_ORGANS) -> str:
    return names.get(int(label_id), f"label {int(label_id)}")


def organ_legend(ax: Axes | Figure, label_ids: Sequence[int], *, names: Mapping[int, str] = BTCV_ORGANS,
                 loc: str = "upper left", outside: bool = True, fontsize: float = 7, ncol: int = 1) -> None:
    """Add a legend with one coloured patch per label id (nothing when ``label_ids`` is empty).

    ``ax`` may also be a figure (e.g. ``loc="outside lower center"`` under constrained layout)."""
    handles = [Patch(color=label_color(int(i)), label=f"{int(i)} {organ_name(i, names)}") for i in label_ids if i]
    if not handles:
        return
    kw: dict[str, Any] = {"bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0} if outside else {}
    ax.legend(handles=handles, loc=loc, fontsize=fontsize, frameon=False, ncol=ncol, **kw)


# --------------------------------------------------------------------------------------------- figures
class ShownFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter displays as a PNG without ``pyplot`` or an inline backend.

    The last expression of a cell (or ``display(fig)``) shows it once, in papermill, JupyterLab and nbconvert.
    """

    def _repr_png_(self) -> bytes:
        return figure_to_png(self)


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> ShownFigure:
    """A pyplot-free figure with the constrained layout (headless, no global figure registry)."""
    kwargs.setdefault("layout", "constrained")
    fig = ShownFigure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------------------------- arrays
def as_volume(x: Any, name: str = "volume") -> np.ndarray:
    """numpy ``(D, H, W)`` from an array or tensor of shape ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3D volume (D, H, W) (leading singleton dims allowed); "
                         f"got shape {arr.shape}")
    return arr


def window_bounds(preset: str | tuple[float, float] = "abdomen") -> tuple[float, float]:
    """``(low, high)`` HU of a window preset of :data:`WINDOWS` or of a ``(width, level)`` pair."""
    if isinstance(preset, str):
        if preset not in WINDOWS:
            raise ValueError(f"unknown window preset {preset!r}; choose one of {sorted(WINDOWS)} or (width, level)")
        width, level = WINDOWS[preset]
    else:
        width, level = (float(v) for v in preset)
    return level - width / 2.0, level + width / 2.0


def window(image: Any, preset: str | tuple[float, float] | None = "abdomen") -> np.ndarray:
    """Map intensities to [0, 1]: a named preset of :data:`WINDOWS`, a ``(width, level)`` pair in HU,
    or ``None`` for a robust min-max (1st-99th percentile; images already in [0, 1] are kept as they are)."""
    arr = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image, dtype=np.float32)
    if preset is None:
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return np.zeros_like(arr)
        if finite.min() >= 0.0 and finite.max() <= 1.0:
            return np.clip(arr, 0.0, 1.0)
        lo, hi = np.percentile(finite, [1, 99])
    else:
        lo, hi = window_bounds(preset)
    return np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def display_slice(volume: np.ndarray, axis: str | int, index: int) -> np.ndarray:
    """2D slice of a RAS ``(D, H, W)`` volume oriented for display (rows top-down, radiological left-right).

    The same transpose-and-flip works for all three views: ``s.T[::-1, ::-1]``.
    """
    ax = AXES[axis] if isinstance(axis, str) else int(axis)
    if not 0 <= index < volume.shape[ax]:
        raise IndexError(f"slice index {index} outside [0, {volume.shape[ax]}) on axis {axis}")
    return np.take(volume, index, axis=ax).T[::-1, ::-1]


def overlay_rgb(image2d: np.ndarray, label2d: np.ndarray | None = None, *, alpha: float = 0.5,
                window_preset: str | tuple[float, float] | None = "abdomen") -> np.ndarray:
    """Blend a 2D image with its label colours: ``(H, W, 3)`` float in [0, 1].

    Background pixels are the windowed grey value ``g``; a pixel of label ``k`` is ``(1 - alpha) * g + alpha * c_k``.
    """
    grey = window(image2d, window_preset)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if label2d is None:
        return rgb
    lab = np.asarray(label2d).astype(np.int64)
    if lab.shape != grey.shape:
        raise ValueError(f"label slice shape {lab.shape} differs from image slice shape {grey.shape}")
    for k in np.unique(lab):
        if k <= 0:
            continue
        m = lab == k
        rgb[m] = (1.0 - alpha) * rgb[m] + alpha * np.asarray(label_color(int(k)))
    return rgb


def center_of_mass_index(label: Any) -> tuple[int, int, int]:
    """Voxel index of the foreground's centre of mass; the volume centre when there is no foreground."""
    lab = as_volume(label, "label")
    idx = np.argwhere(lab > 0)
    if idx.size == 0:
        return tuple(int(s // 2) for s in lab.shape)  # type: ignore[return-value]
    return tuple(int(round(v)) for v in idx.mean(axis=0))  # type: ignore[return-value]


def figure_to_rgb(fig: Figure, dpi: float | None = None) -> np.ndarray:
    """Render a figure with the Agg canvas and return its pixels, ``(H, W, 3)`` uint8."""
    canvas = FigureCanvasAgg(fig)
    if dpi is not None:
        fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def figure_to_png(fig: Figure, dpi: float = 100) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: float = 120) -> Path:
    """Save atomically (format from the suffix)."""
    with atomic_path(path) as tmp:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def slice_aspect(spacing: Sequence[float] | None, axis: int) -> float:
    """Pixel aspect (row spacing / column spacing) of a displayed slice."""
    if spacing is None:
        return 1.0
    rest = [float(s) for i, s in enumerate(spacing) if i != axis]  # (cols, rows) after the transpose
    return rest[1] / rest[0]


# --------------------------------------------------------------------------------------------- views
def plot_triplanar(image: Any, label: Any = None, *, position: str | Sequence[int] = "com",
                   window_preset: str | tuple[float, float] | None = "abdomen", alpha: float = 0.45,
                   spacing: Sequence[float] | None = None, legend: bool = True, title: str | None = None,
                   panel_size: float = 3.2) -> Figure:
    """Axial, coronal and sagittal slices through one point with the label overlay and an organ legend.

    Args:
        image: CT volume (D, H, W) in HU (or any intensities with ``window_preset=None``).
        label: integer label volume of the same shape, or ``None``.
        position: ``"com"`` (labels' centre of mass), ``"center"`` or a voxel index ``(i, j, k)``.
        spacing: voxel size in mm, so slices are drawn with their true aspect ratio.
    """
    img = as_volume(image, "image")
    lab = None if label is None else as_volume(label, "label")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {img.shape}")
    if isinstance(position, str):
        if position == "com":
            pos = center_of_mass_index(lab) if lab is not None else tuple(s // 2 for s in img.shape)
        elif position == "center":
            pos = tuple(s // 2 for s in img.shape)
        else:
            raise ValueError(f"position must be 'com', 'center' or (i, j, k); got {position!r}")
    else:
        pos = tuple(int(p) for p in position)
    fig = new_figure(figsize=(3 * panel_size + (1.8 if legend and lab is not None else 0), panel_size))
    axs = fig.subplots(1, 3)
    for ax, view in zip(axs, ("axial", "coronal", "sagittal"), strict=True):
        a = AXES[view]
        sl = display_slice(img, a, pos[a])
        ls = display_slice(lab, a, pos[a]) if lab is not None else None
        ax.imshow(overlay_rgb(sl, ls, alpha=alpha, window_preset=window_preset), interpolation="nearest",
                  aspect=slice_aspect(spacing, a))
        ax.set_title(f"{view} [{pos[a]}]", fontsize=9)
        ax.set_axis_off()
    if legend and lab is not None:
        organ_legend(axs[-1], [int(k) for k in np.unique(lab) if k > 0])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_slices(images: Sequence[Any], titles: Sequence[str] | None = None, *, axis: str = "axial",
                index: int | None = None, labels: Sequence[Any] | None = None,
                window_preset: str | tuple[float, float] | None = None, ncols: int | None = None,
                panel_size: float = 2.6) -> Figure:
    """One slice (same axis/index) of several volumes side by side, e.g. a phantom cohort or augmentations."""
    vols = [as_volume(v, f"images[{i}]") for i, v in enumerate(images)]
    if not vols:
        raise ValueError("plot_slices needs at least one volume")
    ncols = ncols or min(len(vols), 4)
    nrows = int(np.ceil(len(vols) / ncols))
    fig = new_figure(figsize=(ncols * panel_size, nrows * panel_size))
    axs = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    a = AXES[axis]
    for i, ax in enumerate(axs):
        ax.set_axis_off()
        if i >= len(vols):
            continue
        v = vols[i]
        k = v.shape[a] // 2 if index is None else min(index, v.shape[a] - 1)
        lab = None if labels is None or labels[i] is None else display_slice(as_volume(labels[i]), a, k)
        ax.imshow(overlay_rgb(display_slice(v, a, k), lab, window_preset=window_preset), interpolation="nearest")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    return fig


def plot_windows(image: Any, *, axis: str = "axial", index: int | None = None,
                 presets: Sequence[str | tuple[float, float]] = ("abdomen", "lung", "bone"),
                 panel_size: float = 3.0) -> Figure:
    """The same slice under several CT windows (named presets of :data:`WINDOWS` or ``(width, level)``)."""
    vol = as_volume(image, "image")
    a = AXES[axis]
    k = vol.shape[a] // 2 if index is None else index
    sl = display_slice(vol, a, k)
    fig = new_figure(figsize=(len(presets) * panel_size, panel_size))
    for ax, preset in zip(np.atleast_1d(fig.subplots(1, len(presets))), presets, strict=True):
        ax.imshow(window(sl, preset), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        w_, l_ = WINDOWS[preset] if isinstance(preset, str) else preset
        ax.set_title(f"{preset if isinstance(preset, str) else 'custom'} W{w_:g}/L{l_:g}", fontsize=9)
        ax.set_axis_off()
    return fig


def plot_ssl_panels(original: Any, rotated: Any, cutout: Any, reconstructed: Any = None, *,
                    rotation_labels: Sequence[int] | None = None, max_samples: int = 4, axis: str = "axial",
                    window_preset: str | tuple[float, float] | None = None, panel_size: float = 2.2,
                    mask: Any = None) -> Figure:
    """The SSL proxy tasks (paper Sec. 3, Fig. 1) for a batch: original crop, rotated, cut-out, reconstruction.

    Inputs are ``(B, C, D, H, W)`` tensors/arrays (or one ``(D, H, W)`` volume), typically intensities
    already scaled to [0, 1]; the middle slice of ``axis`` is shown. ``rotation_labels`` (0-3, multiples
    of 90 degrees in the axial plane) are written above the rotated panel. With ``mask`` (the cut-out voxels,
    same shape, e.g. ``SSLView.mask``) each row shows the slice where the boxes hide the most content (the sum
    of the rotated intensities under them; air hides nothing) and the boxes are outlined in the cut-out and
    reconstructed panels. ``window_preset``: see :func:`window`; for intensities scaled from HU [-1000, 1000] to [0, 1],
    :data:`SCALED_SOFT_TISSUE` shows the organs.
    """
    def batch(x: Any, name: str) -> np.ndarray:
        arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None, None]
        if arr.ndim == 4:
            arr = arr[:, None]
        if arr.ndim != 5:
            raise ValueError(f"{name} must be (B, C, D, H, W) or (D, H, W); got shape {arr.shape}")
        return arr[:, 0]

    cols = [("original", batch(original, "original")), ("rotated", batch(rotated, "rotated")),
            ("cut-out", batch(cutout, "cutout"))]
    if reconstructed is not None:
        cols.append(("reconstructed", batch(reconstructed, "reconstructed")))
    boxes = batch(mask, "mask") > 0.5 if mask is not None else None
    if boxes is not None and boxes.shape[1:] != cols[2][1].shape[1:]:
        raise ValueError(f"mask has spatial shape {boxes.shape[1:]}, the cut-out view {cols[2][1].shape[1:]}")
    n = min(max_samples, *(c[1].shape[0] for c in cols))
    fig = new_figure(figsize=(len(cols) * panel_size, n * panel_size))
    axs = np.asarray(fig.subplots(n, len(cols), squeeze=False))
    a = AXES[axis]
    others = tuple(i for i in range(3) if i != a)
    for r in range(n):
        index = cols[0][1][r].shape[a] // 2
        if boxes is not None and boxes[r].any():  # the slice whose cut-out voxels hide the most (bright) content
            hidden = (boxes[r] * np.clip(cols[1][1][r], 0, None)).sum(axis=others)
            index = int((hidden if hidden.any() else boxes[r].sum(axis=others)).argmax())
        for c, (name, arr) in enumerate(cols):
            v = arr[r]
            axs[r, c].imshow(window(display_slice(v, a, index), window_preset), cmap="gray",
                             vmin=0, vmax=1, interpolation="nearest")
            if boxes is not None and name in ("cut-out", "reconstructed") and boxes[r].any():
                outline = display_slice(boxes[r].astype(np.float32), a, index)
                if outline.any():
                    axs[r, c].contour(outline, levels=[0.5], colors="tab:red", linewidths=0.6)
            t = name
            if name == "rotated" and rotation_labels is not None:
                t += f" ({int(rotation_labels[r]) * 90}°)"
            axs[r, c].set_title(t if r == 0 or name == "rotated" else "", fontsize=8)
            axs[r, c].set_axis_off()
    return fig


def plot_prediction_vs_truth(image: Any, prediction: Any, truth: Any, *, axis: str = "axial",
                             index: int | None = None, window_preset: str | tuple[float, float] | None = "abdomen",
                             alpha: float = 0.45, spacing: Sequence[float] | None = None,
                             panel_size: float = 3.2) -> Figure:
    """Ground truth, prediction and an error map on one slice (default: the slice with most foreground).

    Error map colours (:data:`ERROR_COLORS`, colour-blind safe): missed foreground (false negative) sky blue,
    spurious foreground (false positive) vermillion, foreground with the wrong organ yellow.
    """
    img, pred, gt = as_volume(image, "image"), as_volume(prediction, "prediction"), as_volume(truth, "truth")
    if not (img.shape == pred.shape == gt.shape):
        raise ValueError(f"shapes differ: image {img.shape}, prediction {pred.shape}, truth {gt.shape}")
    a = AXES[axis]
    if index is None:
        counts = (gt > 0).sum(axis=tuple(i for i in range(3) if i != a))
        index = int(np.argmax(counts)) if counts.any() else img.shape[a] // 2
    sl, p, t = (display_slice(v, a, index) for v in (img, pred, gt))
    err = np.repeat(window(sl, window_preset)[..., None], 3, axis=-1) * 0.6
    kinds = {"missed (FN)": ((t > 0) & (p == 0), ERROR_COLORS["missed (FN)"]),
             "spurious (FP)": ((t == 0) & (p > 0), ERROR_COLORS["spurious (FP)"]),
             "wrong organ": ((t > 0) & (p > 0) & (t != p), ERROR_COLORS["wrong organ"])}
    for m, col in kinds.values():
        err[m] = col
    fig = new_figure(figsize=(3 * panel_size + 1.8, panel_size + 0.8))
    axs = fig.subplots(1, 3)
    asp = slice_aspect(spacing, a)
    axs[0].imshow(overlay_rgb(sl, t, alpha=alpha, window_preset=window_preset), interpolation="nearest", aspect=asp)
    axs[1].imshow(overlay_rgb(sl, p, alpha=alpha, window_preset=window_preset), interpolation="nearest", aspect=asp)
    axs[2].imshow(err, interpolation="nearest", aspect=asp)
    wrong = int(sum(m.sum() for m, _ in kinds.values()))
    for ax, name in zip(axs, ("ground truth", "prediction", f"errors ({wrong} px)"), strict=True):
        ax.set_title(f"{name}, {axis} [{index}]", fontsize=9)
        ax.set_axis_off()
    present = sorted(int(k) for k in np.union1d(np.unique(t), np.unique(p)) if k > 0)
    # below the panels, so it never covers the prediction
    organ_legend(fig, present, loc="outside lower center", outside=False, ncol=max(1, min(len(present), 5)))
    axs[2].legend(handles=[Patch(color=c, label=n) for n, (_, c) in kinds.items()], fontsize=7, frameon=False,
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig
