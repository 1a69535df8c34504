"""3D surface rendering of label maps and interactive viewers for JupyterLab.

- :func:`plot_label_surfaces`: marching cubes (scikit-image) per organ, drawn with matplotlib's
  ``Poly3DCollection`` -- static, headless, works in papermill and reports.
- :func:`slice_scroller`: an ipywidgets slider + view selector showing one slice with the label overlay
  (the picture is a PNG ``ipywidgets.Image``, so it needs no interactive matplotlib backend).
- :func:`show_3d`: the interactive 3D viewer that can load here, first found of: NiiVue
  (:mod:`swinunetr_lib.viz.niivue`, ``ipyniivue``: its JavaScript ships in the wheel, so it works
  offline), then itkwidgets (``view(image, label_image=...)``), then a one-line message and the static
  fallback (surfaces + slice scroller).

itkwidgets is an optional extra (``pip install -e ".[viewer]"``): version 1.0 alphas work with
JupyterLab 4 but fetch the viewer's JavaScript from the web at run time (an IPFS gateway, cdn.jsdelivr.net,
lib.imjoy.io), so that viewer needs internet access in the browser; see docs/figures.md, "3D viewer".
"""
from __future__ import annotations

import importlib.util
import io
import os
import socket
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlparse

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from skimage.measure import marching_cubes

from . import niivue
from .figures import (
    AXES,
    as_volume,
    display_slice,
    figure_to_png,
    label_color,
    new_figure,
    organ_legend,
    organ_name,
    overlay_rgb,
    slice_aspect,
)

VIEWER_ENV = "SWINUNETR_3D_VIEWER"
"""Environment override for :func:`show_3d`'s default: ``auto``, ``niivue``, ``itkwidgets`` or ``static``."""
VIEWERS = ("auto", "niivue", "itkwidgets", "static")


# --------------------------------------------------------------------------------------------- surfaces
def label_surfaces(label: Any, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), step_size: int = 1,
                   labels: Sequence[int] | None = None, max_faces: int | None = 20000
                   ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Triangle mesh per label id: ``{id: (verts (N, 3) in mm, faces (M, 3) int)}``.

    Each binary mask is zero-padded by one voxel so surfaces touching the volume border are closed.
    ``step_size`` > 1 coarsens marching cubes (faster, fewer faces); a mesh above ``max_faces`` faces is
    recomputed with a larger step until it fits (display only).
    """
    lab = as_volume(label, "label").astype(np.int64)
    ids = [int(k) for k in np.unique(lab) if k > 0] if labels is None else [int(k) for k in labels]
    meshes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in ids:
        mask = np.pad(lab == k, 1).astype(np.float32)
        if mask.sum() == 0:
            continue
        step = max(1, int(step_size))
        while True:
            try:
                verts, faces, _, _ = marching_cubes(mask, level=0.5, spacing=tuple(float(s) for s in spacing),
                                                    step_size=step)
            except (ValueError, RuntimeError):  # too small for the step size
                verts = faces = None
            if faces is None or not max_faces or len(faces) <= max_faces or step >= 8:
                break
            step += 1  # coarser marching cubes until the mesh is small enough to draw quickly
        if faces is None or len(faces) == 0:
            continue
        meshes[k] = (verts - np.asarray(spacing, dtype=float), faces)  # undo the one-voxel pad
    return meshes


def plot_label_surfaces(label: Any, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), step_size: int = 1,
                        labels: Sequence[int] | None = None, elev: float = 15.0, azim: float = 60.0,
                        alpha: float = 0.9, legend: bool = True, title: str | None = None,
                        size: float = 5.0) -> Figure:
    """3D surface rendering of a label map (one colour per organ), headless.

    Args:
        label: integer label volume (D, H, W) in RAS orientation.
        spacing: voxel size in mm (x, y, z), so organs keep their true proportions.
        step_size: marching-cubes step; 2 is about 4x faster and still recognisable.
        elev, azim: camera angles in degrees. The default camera stands at the patient's front-right (RAS
            +y anterior, +x right), so, as on axial CT slices, the patient's right shows on the viewer's left.
    """
    meshes = label_surfaces(label, spacing=spacing, step_size=step_size, labels=labels)
    lab_shape = as_volume(label, "label").shape
    fig = new_figure(figsize=(size + (1.8 if legend and meshes else 0), size))
    ax = fig.add_subplot(projection="3d")
    for k, (verts, faces) in meshes.items():
        poly = Poly3DCollection(verts[faces], facecolors=label_color(k), edgecolor="none", alpha=alpha, shade=True)
        ax.add_collection3d(poly)
    extent = np.asarray(lab_shape, dtype=float) * np.asarray(spacing, dtype=float)
    for setter, e in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), extent, strict=True):
        setter(0, e)
    ax.set_box_aspect(tuple(extent))
    ax.set_xlabel("x (mm, →right)", fontsize=7)
    ax.set_ylabel("y (mm, →anterior)", fontsize=7)
    ax.set_zlabel("z (mm, →superior)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.view_init(elev=elev, azim=azim)
    if not meshes:
        ax.set_title("no labelled voxels", fontsize=9)
    elif title:
        ax.set_title(title, fontsize=10)
    if legend:
        organ_legend(ax, sorted(meshes))
    return fig


# --------------------------------------------------------------------------------------------- widgets
def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    imsave(buf, np.clip(rgb, 0, 1), format="png")
    return buf.getvalue()


def slice_scroller(image: Any, label: Any = None, *, axis: str = "axial",
                   window_preset: str | tuple[float, float] | None = "abdomen", alpha: float = 0.45,
                   zoom: int = 3, spacing: Sequence[float] | None = None) -> Any:
    """An ipywidgets box: a view selector, a slice slider and the slice with its label overlay.

    Returns an ``ipywidgets.VBox`` (display it as a cell's last expression). Each slice is rendered to a
    PNG by :func:`~swinunetr_lib.viz.figures.overlay_rgb`, upsampled ``zoom`` times (nearest) for visibility;
    with ``spacing`` (mm, x y z) the coarser direction is stretched further, so anisotropic voxels (e.g.
    0.7 x 0.7 x 2.5 mm) keep their true proportions in coronal and sagittal views.
    """
    img = as_volume(image, "image")
    lab = None if label is None else as_volume(label, "label")
    if lab is not None and lab.shape != img.shape:
        raise ValueError(f"label shape {lab.shape} differs from image shape {img.shape}")
    view = w.Dropdown(options=list(AXES), value=axis, description="view")
    slider = w.IntSlider(min=0, max=img.shape[AXES[axis]] - 1, value=img.shape[AXES[axis]] // 2,
                         description="slice", continuous_update=True)
    picture = w.Image(format="png", layout=w.Layout(max_width="520px"))
    caption = w.HTML()

    def render(*_: Any) -> None:
        a = AXES[view.value]
        slider.max = img.shape[a] - 1
        k = min(slider.value, slider.max)
        ls = None if lab is None else display_slice(lab, a, k)
        rgb = overlay_rgb(display_slice(img, a, k), ls, alpha=alpha, window_preset=window_preset)
        picture.value = _png(_upsample(rgb, zoom, slice_aspect(spacing, a)))
        present = [] if ls is None else [int(v) for v in np.unique(ls) if v > 0]
        caption.value = " ".join(
            f"<span style='color:rgb{tuple(int(255 * c) for c in label_color(v))}'>■</span> {organ_name(v)}"
            for v in present) or "<i>no labels on this slice</i>"

    view.observe(render, names="value")
    slider.observe(render, names="value")
    render()
    return w.VBox([w.HBox([view, slider]), picture, caption])


def _upsample(rgb: np.ndarray, zoom: int, aspect: float) -> np.ndarray:
    """Nearest-neighbour enlargement of an (H, W, 3) slice: ``zoom`` times, and the coarser axis by
    ``aspect`` (= row spacing / column spacing) on top."""
    h, w = rgb.shape[:2]
    out_h, out_w = round(h * zoom * max(aspect, 1.0)), round(w * zoom * max(1.0 / aspect, 1.0))
    rows = (np.arange(out_h) * h) // out_h
    cols = (np.arange(out_w) * w) // out_w
    return rgb[rows][:, cols]


# --------------------------------------------------------------------------------------------- itkwidgets
def _host_reachable(url: str, timeout_s: float = 1.5) -> bool:
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def itkwidgets_status(check_network: bool = True) -> tuple[bool, str]:
    """Whether the itkwidgets 3D viewer can be used here, and why not.

    Checks that ``itkwidgets`` (with its JupyterLab extension ``imjoy_jupyterlab_extension``) is
    importable and, with ``check_network``, that the host serving its viewer JavaScript answers (the
    kernel's network is a proxy for the browser's; the viewer is never served locally, see module doc).
    """
    for mod in ("itkwidgets", "imjoy_jupyterlab_extension"):
        if importlib.util.find_spec(mod) is None:
            return False, f"{mod} is not installed (pip install -e '.[viewer]' in the project folder)"
    try:
        from itkwidgets import viewer_config  # noqa: PLC0415 — optional extra ([viewer]), may be absent or broken
    except Exception as err:  # a broken install must not break the notebook
        return False, f"itkwidgets failed to import ({type(err).__name__}: {err})"
    if check_network and not _host_reachable(viewer_config.ITK_VIEWER_SRC):
        host = urlparse(viewer_config.ITK_VIEWER_SRC).hostname
        return False, f"its viewer is loaded from {host}, which is unreachable (offline?)"
    return True, "itkwidgets available"


def show_3d(image: Any, label: Any = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
            viewer: Literal["auto", "niivue", "itkwidgets", "static"] | None = None, step_size: int = 2,
            window_preset: str | tuple[float, float] | None = "abdomen") -> Any:
    """Interactive 3D view of a CT and its labels.

    ``viewer="auto"`` (default, or ``$SWINUNETR_3D_VIEWER``) takes the first viewer that can load: NiiVue
    (:func:`swinunetr_lib.viz.niivue.niivue_viewer`, when ``ipyniivue`` is installed; works offline), then
    ``itkwidgets.view(image, label_image=...)`` when :func:`itkwidgets_status` says it can load (installed,
    its web host reachable); otherwise it prints one line saying why and displays the static fallback: the
    surface rendering and a :func:`slice_scroller`. ``niivue`` or ``itkwidgets`` asks for that viewer alone
    (the fallback, with a message, when it cannot load). Returns the viewer's widget, or the fallback
    ``ipywidgets.VBox``.
    """
    img = as_volume(image, "image")
    lab = None if label is None else as_volume(label, "label")
    choice = viewer or os.environ.get(VIEWER_ENV, "auto")
    if choice not in VIEWERS:
        raise ValueError(f"viewer must be one of {', '.join(repr(v) for v in VIEWERS)}; got {choice!r}")
    reasons = []
    if choice in ("auto", "niivue"):
        ok, why = niivue.niivue_status()
        if ok:
            try:
                return niivue.niivue_viewer(img, lab, spacing=spacing, window_preset=window_preset or "abdomen")
            except Exception as err:  # a broken viewer must not break the notebook
                why = f"NiiVue failed ({type(err).__name__}: {err})"
        reasons.append(why)
    if choice in ("auto", "itkwidgets"):
        ok, why = itkwidgets_status(check_network=choice == "auto")
        if ok:
            from itkwidgets import view  # noqa: PLC0415 — optional extra ([viewer]), checked just above

            kw: dict[str, Any] = {"image": np.ascontiguousarray(img.astype(np.float32))}
            if lab is not None:
                kw["label_image"] = np.ascontiguousarray(lab.astype(np.uint8))
            try:
                return view(**kw)
            except Exception as err:  # e.g. incompatible ngff-zarr / zarr companions
                why = f"itkwidgets.view failed ({type(err).__name__}: {err})"
        reasons.append(why)
    if reasons and choice == "auto":
        print(f"3D viewer: {'; '.join(reasons)} -> static fallback (surface rendering + slice scroller).")
    elif reasons:
        print(f"3D viewer: {reasons[0]}; showing the static fallback instead.")
    return static_3d(img, lab, spacing=spacing, step_size=step_size, window_preset=window_preset)


def static_3d(image: Any, label: Any = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), step_size: int = 2,
              window_preset: str | tuple[float, float] | None = "abdomen") -> Any:
    """The fallback of :func:`show_3d`: surface rendering (as a PNG image widget) above a slice scroller."""
    parts = []
    if label is not None:
        fig = plot_label_surfaces(label, spacing=spacing, step_size=step_size)
        parts.append(w.Image(value=figure_to_png(fig, dpi=80), format="png"))
    parts.append(slice_scroller(image, label, window_preset=window_preset, spacing=spacing))
    return w.VBox(parts)
