"""Image-based tests of swinunetr_lib.viz.figures / viz3d: rendered pixels carry the organ colours where labels are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from swinunetr_lib.viz import curves as viz_metrics
from swinunetr_lib.viz import figures as viz
from swinunetr_lib.viz import niivue as viz_niivue
from swinunetr_lib.viz import surfaces as viz3d


def _count_color(rgb: np.ndarray, color: tuple[float, float, float], tol: int = 3) -> int:
    """Pixels of a uint8 (H, W, 3) image within ``tol`` of an RGB colour given in [0, 1]."""
    target = np.round(np.asarray(color) * 255).astype(int)
    return int((np.abs(rgb.astype(int) - target).max(axis=-1) <= tol).sum())


def _two_organ_volume(shape=(40, 36, 24)):
    """Black image (-1000 HU) with a liver box (6) and a spleen box (1) at known positions."""
    img = np.full(shape, -1000.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[5:20, 8:25, 4:18] = 6
    lab[24:34, 10:20, 6:14] = 1
    return img, lab


def test_colormap_is_stable_and_distinct():
    # the colour table is a public contract (figures in README/notebooks); changing it must be deliberate
    assert viz.BTCV_COLORS[1] == (170, 64, 170) and viz.BTCV_COLORS[6] == (234, 128, 85)
    assert viz.BTCV_COLORS[8] == (212, 0, 106) and viz.BTCV_COLORS[13] == (149, 170, 255)
    assert sorted(viz.BTCV_COLORS) == list(range(1, 14)) == sorted(viz.BTCV_ORGANS)
    assert len(set(viz.BTCV_COLORS.values())) == 13
    cmap = viz.label_colormap(14)
    assert cmap.N == 14 and cmap(0)[3] == 0.0
    for k in range(1, 14):
        assert np.allclose(cmap(k)[:3], np.asarray(viz.BTCV_COLORS[k]) / 255)
    assert viz.label_color(20) == viz.label_color(20)  # out-of-table ids: deterministic fallback
    # names agree with the data module's label table
    from swinunetr_lib.data.labels import BTCV_LABELS

    for k, name in BTCV_LABELS.items():
        words = set(name.replace("_", " ").replace("and", "&").split())
        assert words & set(viz.BTCV_ORGANS[k].split()), (k, name, viz.BTCV_ORGANS[k])


def test_window_presets_match_hu_ranges():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0])
    assert np.allclose(viz.window(hu, "abdomen"), [0, 0, 0.5, 1, 1])
    assert np.allclose(viz.window(np.array([-175.0, 250.0]), "btcv"), [0, 1])
    assert np.allclose(viz.window(np.array([-1350.0, 150.0]), "lung"), [0, 1])
    assert np.allclose(viz.window(np.array([-500.0, 1300.0]), "bone"), [0, 1])
    assert np.allclose(viz.window(np.array([0.2, 0.7]), None), [0.2, 0.7])  # [0, 1] data kept
    with pytest.raises(ValueError, match="unknown window preset"):
        viz.window(hu, "brain")


def test_overlay_rgb_blends_exact_colours():
    img = np.full((6, 5), 40.0)  # grey 0.5 in the abdomen window
    lab = np.zeros((6, 5), np.uint8)
    lab[1:3, 1:4] = 6
    lab[4, 0] = 1
    rgb = viz.overlay_rgb(img, lab, alpha=0.4)
    liver = 0.6 * 0.5 + 0.4 * np.asarray(viz.label_color(6))
    assert np.allclose(rgb[1:3, 1:4], liver)
    assert np.allclose(rgb[4, 0], 0.6 * 0.5 + 0.4 * np.asarray(viz.label_color(1)))
    assert np.allclose(rgb[lab == 0], 0.5)
    assert np.allclose(viz.overlay_rgb(img, np.zeros_like(lab)), 0.5)  # empty labels: plain grey


def test_display_slice_orientation_undone():
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for name, axis in viz.AXES.items():
        for k in (0, vol.shape[axis] - 1):
            shown = viz.display_slice(vol, name, k)
            assert np.array_equal(shown[::-1, ::-1].T, np.take(vol, k, axis=axis))
    # axial: patient right (high x) on the image left, anterior (high y) at the top
    shown = viz.display_slice(vol, "axial", 0)
    assert shown[0, 0] == vol[-1, -1, 0]
    with pytest.raises(IndexError):
        viz.display_slice(vol, "axial", 6)


def test_triplanar_render_has_overlay_colours_where_labels_are():
    img, lab = _two_organ_volume()
    fig = viz.plot_triplanar(img, lab, position="com", alpha=0.5, legend=False)
    rgb = viz.figure_to_rgb(fig)
    # black image + alpha 0.5 -> composite colour is exactly half the organ colour
    liver = _count_color(rgb, 0.5 * np.asarray(viz.label_color(6)))
    spleen = _count_color(rgb, 0.5 * np.asarray(viz.label_color(1)))
    aorta = _count_color(rgb, 0.5 * np.asarray(viz.label_color(8)))
    assert liver > 200 and spleen > 50 and aorta == 0
    # the centre-of-mass position hits both boxes on the axial view; the liver box is bigger
    assert liver > spleen
    # the legend lists exactly the present organs
    fig = viz.plot_triplanar(img, lab)
    texts = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert texts == ["1 spleen", "6 liver"]


def test_triplanar_accepts_tensors_and_empty_labels():
    import torch

    img, lab = _two_organ_volume()
    fig = viz.plot_triplanar(torch.from_numpy(img)[None, None], torch.zeros(1, *lab.shape, dtype=torch.uint8))
    rgb = viz.figure_to_rgb(fig)
    assert all(_count_color(rgb, 0.45 * np.asarray(viz.label_color(k))) == 0 for k in range(1, 14))
    assert fig.axes[-1].get_legend() is None
    assert viz.center_of_mass_index(np.zeros((4, 6, 8))) == (2, 3, 4)
    with pytest.raises(ValueError, match="differs"):
        viz.plot_triplanar(img, lab[:-1])
    with pytest.raises(ValueError, match="3D volume"):
        viz.plot_triplanar(img[0], None)


def test_real_example_ct_overlay(example_ct_sm, example_seg):
    import nibabel as nib

    from swinunetr_lib.data.labels import totalseg_to_btcv

    ct = np.asarray(nib.load(example_ct_sm).dataobj, dtype=np.float32)
    seg, report = totalseg_to_btcv(np.asarray(nib.load(example_seg).dataobj))
    assert "liver" in report.present
    k = int(np.argmax((seg == 6).sum(axis=(0, 1))))
    axial = viz.overlay_rgb(viz.display_slice(ct, "axial", k), viz.display_slice(seg, "axial", k), alpha=0.45)
    liver_px = viz.display_slice(seg, "axial", k) == 6
    grey = viz.window(viz.display_slice(ct, "axial", k))
    assert np.allclose(axial[liver_px], 0.55 * grey[liver_px, None] + 0.45 * np.asarray(viz.label_color(6)), atol=1e-6)
    fig = viz.plot_triplanar(ct, seg, spacing=(3.0, 3.0, 3.0), title="example CT")
    assert len(fig.axes[-1].get_legend().get_texts()) == len(report.present)


def test_palettes_stay_distinguishable_for_colour_blind_viewers():
    """Issue #26: the organ palette and the error map's colours stay apart (CIELAB Delta E) with normal vision
    and as simulated for protanopia, deuteranopia and tritanopia (Machado et al. 2009). The earlier tab20 organ
    colours fell to 4.6 (right kidney / gallbladder, protanopia), the earlier error colours to 25 (deuteranopia)."""
    from swinunetr_lib.viz import colour_vision as cv

    # the simulation itself: a dichromat confuses red and green (deuteranopia), a trichromat does not; grey stays grey
    red_green = np.array([[0.8, 0.3, 0.2], [0.45, 0.5, 0.2]])
    assert cv.min_distance(red_green, "normal")[0] > 25 and cv.min_distance(red_green, "deuteranopia")[0] < 10
    assert np.allclose(cv.simulate(np.full((1, 3), 0.5), "tritanopia"), 0.5, atol=0.01)
    assert np.allclose(cv.to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=0.01)
    organs = cv.palette_report(viz.BTCV_COLORS, viz.BTCV_ORGANS)
    assert all(d >= 20 for d, _ in organs.values()), organs
    errors = cv.palette_report(list(viz.ERROR_COLORS.values()))
    assert all(d >= 30 for d, _ in errors.values()), errors
    greys = np.linspace(0, 0.6, 13)[:, None].repeat(3, axis=1)  # the error map's dimmed CT behind the colours
    for vision in cv.VISIONS:
        lab = cv.to_lab(cv.simulate(np.array(list(viz.ERROR_COLORS.values())), vision))
        assert np.linalg.norm(lab[:, None] - cv.to_lab(greys)[None], axis=-1).min() > 25, vision
    organ_lab = cv.to_lab(np.array(list(viz.BTCV_COLORS.values())) / 255)  # each reads as a colour over the CT
    assert np.hypot(organ_lab[:, 1], organ_lab[:, 2]).min() > 35


def test_prediction_vs_truth_error_map():
    img, gt = _two_organ_volume()
    pred = gt.copy()
    pred[24:34, 10:20, 6:14] = 0  # spleen missed
    pred[0:3, 0:3, :] = 6  # spurious liver
    fig = viz.plot_prediction_vs_truth(img, pred, gt, axis="axial", index=10)
    rgb = viz.figure_to_rgb(fig)
    fn_px = _count_color(rgb, viz.ERROR_COLORS["missed (FN)"], tol=2)
    fp_px = _count_color(rgb, viz.ERROR_COLORS["spurious (FP)"], tol=2)
    assert fn_px > 30 and fp_px > 3
    assert "errors (109 px)" in fig.axes[2].get_title()  # 10*10 FN + 3*3 FP on slice 10
    perfect = viz.plot_prediction_vs_truth(img, gt, gt, index=10)
    assert "errors (0 px)" in perfect.axes[2].get_title()


def test_ssl_panels_shapes_and_titles():
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 16, 16, 16), dtype=np.float32)
    fig = viz.plot_ssl_panels(x, np.rot90(x, 1, axes=(2, 3)), x * (rng.random(x.shape) > 0.3), x,
                              rotation_labels=[1, 2, 3])
    assert len(fig.axes) == 12
    assert fig.axes[1].get_title() == "rotated (90°)" and fig.axes[9].get_title() == "rotated (270°)"
    assert viz.figure_to_rgb(fig).std() > 10
    assert len(viz.plot_ssl_panels(x[0, 0], x[0, 0], x[0, 0]).axes) == 3
    with pytest.raises(ValueError, match="original"):
        viz.plot_ssl_panels(np.zeros((4, 4)), x, x)


def test_ssl_panels_show_the_slice_the_boxes_hide_most_of_and_outline_them():
    """Box 1 covers slices 2-4 over air; box 2 slices 10-12 over tissue: box 2's brightest slice is drawn, outlined."""
    x = np.zeros((1, 1, 16, 16, 16), dtype=np.float32)
    x[..., 4:12, 4:12, 8:14] = 0.55                      # "tissue" on slices 8-13
    x[..., 6, 6, 11] = 1.0                                # under box 2 on slice 11 only: it hides the most there
    mask = np.zeros_like(x, dtype=bool)
    mask[..., 0:8, 0:8, 2:5] = True                       # more voxels, but air only
    mask[..., 5:8, 5:8, 10:13] = True
    cut = np.where(mask, 0.2, x)
    fig = viz.plot_ssl_panels(x, x, cut, x, mask=mask)
    shown = fig.axes[0].get_images()[0].get_array()
    assert np.array_equal(shown, viz.display_slice(x[0, 0], 2, 11))  # the middle of box 2, not the middle slice
    outlined = [len(ax.collections) > 0 for ax in fig.axes]
    assert outlined == [False, False, True, True]
    with pytest.raises(ValueError, match="mask has spatial shape"):
        viz.plot_ssl_panels(x, x, cut, mask=mask[..., :8])


def test_learning_curves_from_metrics_csv(tmp_path):
    steps = np.arange(1, 21)
    df = pd.DataFrame({"step": steps, "loss": 2.0 / steps, "lr": 1e-4})
    df["val_dice"] = np.where(steps % 5 == 0, steps / 20.0, np.nan)  # sparse validation rows
    (tmp_path / "run").mkdir()
    df.to_csv(tmp_path / "run" / "metrics.csv", index=False)
    fig = viz_metrics.plot_learning_curves(tmp_path / "run", smoothing=0.5)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["loss", "lr", "val_dice"]
    assert fig.axes[0].get_yscale() == "log"
    val_line = fig.axes[2].get_lines()[0]
    assert np.array_equal(val_line.get_xdata(), [5, 10, 15, 20])  # NaN rows skipped
    fig2 = viz_metrics.plot_learning_curves({"scratch": df, "ssl": df.assign(loss=df.loss / 2)}, columns=["loss"])
    assert [t.get_text() for t in fig2.axes[0].get_legend().get_texts()] == ["scratch", "ssl"]
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        viz_metrics.plot_learning_curves(tmp_path / "missing")
    with pytest.raises(KeyError, match="step"):
        viz_metrics.plot_learning_curves(df.drop(columns="step"))


def test_organ_metrics_bar_and_box(tmp_path):
    rows = [{"case": c, "class": k, "dice": 0.5 + 0.03 * k + 0.01 * c, "hd95": 10.0 - k / 2}
            for c in range(3) for k in (1, 6, 8)]
    df = pd.DataFrame(rows)
    fig = viz_metrics.plot_organ_metrics(df, kind="bar")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["spleen", "liver", "aorta"]
    heights = [p.get_height() for p in ax.patches]
    assert np.allclose(heights, [0.54, 0.69, 0.75])  # means over cases
    assert np.allclose(ax.patches[1].get_facecolor()[:3], viz.label_color(6))
    assert fig.axes[1].get_ylabel() == "hd95 (mm)"
    df.to_csv(tmp_path / "per_case.csv", index=False)
    box = viz_metrics.plot_organ_metrics(tmp_path / "per_case.csv", kind="box", metrics="dice")
    assert len(box.axes) == 1
    grouped = viz_metrics.plot_organ_metrics(pd.concat([df.assign(init="scratch"), df.assign(init="ssl")]),
                                     group_col="init", metrics="dice")
    assert [t.get_text() for t in grouped.axes[0].get_legend().get_texts()] == ["scratch", "ssl"]
    with pytest.raises(KeyError, match="none of the metrics"):
        viz_metrics.plot_organ_metrics(df, metrics=("nsd",))


def test_label_efficiency_mean_and_band():
    df = pd.DataFrame([{"fraction": f, "init": i, "seed": s, "dice": f * (0.8 if i == "ssl" else 0.6) + 0.01 * s}
                       for f in (0.1, 0.5, 1.0) for i in ("scratch", "ssl") for s in (0, 1, 2)])
    fig = viz_metrics.plot_label_efficiency(df)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2
    assert np.allclose(lines[1].get_ydata(), [0.1 * 0.8 + 0.01, 0.5 * 0.8 + 0.01, 0.8 + 0.01])
    assert "n=3 seeds" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(KeyError, match="fraction"):
        viz_metrics.plot_label_efficiency(df.rename(columns={"fraction": "x"}))


def test_surface_meshes_and_render():
    img, lab = _two_organ_volume()
    meshes = viz3d.label_surfaces(lab, spacing=(2.0, 2.0, 3.0))
    assert sorted(meshes) == [1, 6]
    verts, faces = meshes[6]
    # the liver box spans x voxels 5..19 -> about 10..38 mm; the surface sits half a voxel outside
    assert 8.0 <= verts[:, 0].min() <= 10.5 and 37.5 <= verts[:, 0].max() <= 40.0
    assert verts[:, 2].max() <= 18 * 3.0 + 1e-6
    fig = viz3d.plot_label_surfaces(lab, spacing=(2.0, 2.0, 3.0))
    rgb = viz.figure_to_rgb(fig)
    # shaded faces vary, but the rendering is dominated by hues near the organ colours, never by absent organs
    assert _count_color(rgb, viz.label_color(6), tol=40) > 100
    assert _count_color(rgb, viz.label_color(9), tol=10) == 0
    empty = viz3d.plot_label_surfaces(np.zeros_like(lab))
    assert empty.axes[0].get_title() == "no labelled voxels"


def test_slice_scroller_and_static_fallback(capsys, monkeypatch):
    import ipywidgets as w

    img, lab = _two_organ_volume()
    box = viz3d.slice_scroller(img, lab)
    (view, slider), picture, caption = box.children[0].children, box.children[1], box.children[2]
    assert slider.max == lab.shape[2] - 1 and picture.value[:4] == b"\x89PNG"
    slider.value = 0
    assert "no labels" in caption.value
    slider.value = 10
    assert "liver" in caption.value and "spleen" in caption.value
    view.value = "sagittal"
    assert slider.max == lab.shape[0] - 1
    # neither NiiVue nor itkwidgets here (or forced static): one line naming both, then the fallback widget
    monkeypatch.setattr(viz_niivue, "niivue_status", lambda: (False, "ipyniivue is not installed"))
    monkeypatch.setattr(viz3d, "itkwidgets_status", lambda check_network=True: (False, "itkwidgets is not installed"))
    out = viz3d.show_3d(img, lab)
    assert isinstance(out, w.VBox) and isinstance(out.children[0], w.Image)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "static fallback" in printed[0]
    assert "ipyniivue is not installed" in printed[0] and "itkwidgets is not installed" in printed[0]
    out = viz3d.show_3d(img, lab, viewer="niivue")  # asked for NiiVue alone: no itkwidgets attempt
    assert isinstance(out, w.VBox) and isinstance(out.children[0], w.Image)
    assert capsys.readouterr().out.strip() == \
        "3D viewer: ipyniivue is not installed; showing the static fallback instead."
    assert isinstance(viz3d.show_3d(img, None, viewer="static"), w.VBox)
    with pytest.raises(ValueError, match="viewer"):
        viz3d.show_3d(img, lab, viewer="vtk")


def test_figures_are_figures_and_saved_atomically(tmp_path):
    img, lab = _two_organ_volume()
    figs = [viz.plot_triplanar(img, lab), viz.plot_slices([img, img], ["a", "b"], labels=[lab, None]),
            viz3d.plot_label_surfaces(lab, step_size=2)]
    for i, fig in enumerate(figs):
        assert isinstance(fig, Figure)
        assert fig._repr_png_()[:4] == b"\x89PNG"  # Jupyter shows it without pyplot / inline backend
        path = viz.save_figure(fig, tmp_path / f"f{i}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.png", "f1.png", "f2.png"]


def test_plot_windows_titles_and_pixels():
    vol = np.zeros((8, 8, 4), np.float32)
    vol[:4] = 400.0  # bright for soft tissue, grey for bone (W1800/L400 -> 0.5)
    fig = viz.plot_windows(vol, index=1, presets=("abdomen", "bone", (100.0, 0.0)))
    assert [ax.get_title() for ax in fig.axes] == ["abdomen W400/L40", "bone W1800/L400", "custom W100/L0"]
    shown = fig.axes[1].get_images()[0].get_array()
    assert np.allclose(np.unique(shown), [500 / 1800, 900 / 1800])  # 0 HU and 400 HU in W1800/L400


def test_default_3d_view_shows_the_patients_right_on_the_viewers_left():
    from mpl_toolkits.mplot3d import proj3d

    label = np.zeros((20, 16, 12), dtype=np.int64)
    label[13:18, 5:10, 3:8] = 6   # liver: patient's right = +x in RAS
    label[2:6, 5:10, 3:8] = 1     # spleen: patient's left
    fig = viz3d.plot_label_surfaces(label, spacing=(2.0, 2.0, 2.0))
    ax = fig.axes[0]
    fig.canvas.draw()
    (right_x,), _, _ = proj3d.proj_transform(np.array([31.0]), np.array([15.0]), np.array([11.0]), ax.get_proj())
    (left_x,), _, _ = proj3d.proj_transform(np.array([7.0]), np.array([15.0]), np.array([11.0]), ax.get_proj())
    assert right_x < left_x  # as on axial CT slices (radiological convention)


def test_organ_metrics_on_an_evaluate_table_uses_ids_for_colours_and_finds_hd95():
    from swinunetr_lib.data.labels import BTCV_LABELS

    rows = [{"case": c, "class_id": k, "class": name, "dice": 0.8, "hd95_mm": 5.0}
            for c in ("a", "b") for k, name in BTCV_LABELS.items()]
    fig = viz_metrics.plot_organ_metrics(pd.DataFrame(rows))
    assert len(fig.axes) == 2  # Dice and HD95 panels
    bars = fig.axes[0].patches
    assert [tuple(np.round(b.get_facecolor()[:3], 3)) for b in bars] == \
        [tuple(np.round(np.asarray(viz.label_color(k))[:3], 3)) for k in sorted(BTCV_LABELS)]


def test_slice_scroller_keeps_true_proportions_of_anisotropic_voxels():
    import io

    from PIL import Image

    img = np.zeros((10, 12, 5), dtype=np.float32)  # x, y, z with 1 x 1 x 4 mm voxels: 10 x 12 x 20 mm
    box = viz3d.slice_scroller(img, spacing=(1.0, 1.0, 4.0), zoom=3)
    view, picture = box.children[0].children[0], box.children[1]
    sizes = {}
    for name in ("axial", "coronal", "sagittal"):
        view.value = name
        sizes[name] = Image.open(io.BytesIO(picture.value)).size  # (width, height) in pixels
    assert sizes["axial"] == (30, 36)      # x across, y down: 10 x 12 mm at 3 px/mm
    assert sizes["coronal"] == (30, 60)    # x across, z down: 10 x 20 mm
    assert sizes["sagittal"] == (36, 60)   # y across, z down: 12 x 20 mm


# --------------------------------------------------------------------------------------------- NiiVue
def _nifti(data: bytes):
    """The NIfTI image inside a volume's gzipped bytes, as the browser receives it."""
    import gzip

    import nibabel as nib

    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def _lut_rgba(volume) -> np.ndarray:
    """(K, 4) RGBA rows of a NiiVue label volume's colour table, row i = label i."""
    lut = volume.colormap_label
    assert lut.min == 0
    return np.asarray(lut.lut, dtype=int).reshape(-1, 4)


def test_niivue_view_sends_the_ct_in_its_window_and_the_labels_in_the_organ_colours():
    pytest.importorskip("ipyniivue")
    img, lab = _two_organ_volume()
    img[lab == 6] = 60.5  # a non-integer value: the CT goes as float32, unchanged
    nv = viz_niivue.niivue_view(img, lab, spacing=(0.8, 0.8, 2.5), window_preset="abdomen", label_opacity=0.4)
    ct, seg = nv.volumes
    ct_img, seg_img = _nifti(ct.data), _nifti(seg.data)
    assert np.array_equal(ct_img.get_fdata(), img) and np.array_equal(np.asarray(seg_img.dataobj), lab)
    assert np.allclose(ct_img.affine, np.diag([0.8, 0.8, 2.5, 1.0])) and np.allclose(seg_img.affine, ct_img.affine)
    assert (ct.cal_min, ct.cal_max) == (-160.0, 240.0) and ct.colormap == "gray"  # W400/L40
    assert seg.opacity == 0.4 and seg_img.get_data_dtype() == np.uint8
    rgba = _lut_rgba(seg)
    assert len(rgba) == 7 and rgba[0, 3] == 0  # ids 0..6, background transparent
    for organ in (1, 6):
        assert tuple(rgba[organ, :3]) == viz.BTCV_COLORS[organ] and rgba[organ, 3] == 255
    assert seg.colormap_label.labels[6] == "liver" and seg.colormap_label.labels[1] == "spleen"
    # read like a radiology workstation (issue #26): patient's right on the screen's left, letters on every edge
    assert nv.opts.is_radiological_convention and nv.opts.is_orientation_text_visible
    assert nv.opts.show_all_orientation_markers and nv.opts.is_orient_cube
    assert min(nv.opts.font_color[:3]) > 0.9  # white letters, not NiiVue's grey
    # whole-number HU go as int16 (half the bytes), exactly
    hu = np.round(np.linspace(-1000, 1000, lab.size)).reshape(lab.shape).astype(np.float32)
    sent = _nifti(viz_niivue.niivue_view(hu).volumes[0].data)
    assert sent.get_data_dtype() == np.int16 and np.array_equal(sent.get_fdata(), hu)
    with pytest.raises(ValueError, match="label shape"):
        viz_niivue.niivue_view(img, lab[:-1])
    with pytest.raises(ValueError, match="window preset"):
        viz_niivue.niivue_view(img, lab, window_preset="brain")


def test_niivue_viewer_controls_change_window_layout_and_label_opacity():
    pytest.importorskip("ipyniivue")
    from ipyniivue import SliceType

    img, lab = _two_organ_volume()
    box = viz_niivue.niivue_viewer(img, lab, layout="axial")
    (window, layout, opacity), nv = box.children[0].children, box.children[1]
    assert nv.opts.slice_type == SliceType.AXIAL
    window.value = "lung"
    assert (nv.volumes[0].cal_min, nv.volumes[0].cal_max) == viz_niivue.window_range("lung") == (-1350.0, 150.0)
    layout.value = "3d"
    assert nv.opts.slice_type == SliceType.RENDER
    opacity.value = 0.8
    assert nv.volumes[1].opacity == 0.8


def test_niivue_compare_links_truth_and_prediction():
    pytest.importorskip("ipyniivue")
    img, truth = _two_organ_volume()
    pred = truth.copy()
    pred[lab_slice := (slice(24, 34), slice(10, 20), slice(6, 14))] = 0  # the spleen missed
    box = viz_niivue.niivue_compare(img, pred, truth, spacing=(1.0, 1.0, 2.0))
    window, panes = box.children
    (t_title, t_view), (p_title, p_view) = (p.children for p in panes.children)
    assert "truth" in t_title.value and "prediction" in p_title.value
    assert np.array_equal(np.asarray(_nifti(t_view.volumes[1].data).dataobj), truth)
    assert np.array_equal(np.asarray(_nifti(p_view.volumes[1].data).dataobj), pred)
    assert not np.asarray(_nifti(p_view.volumes[1].data).dataobj)[lab_slice].any()
    assert t_view.other_nv == [p_view] and p_view.other_nv == [t_view]  # crosshair / 3D camera follow
    assert t_view.opts.is_radiological_convention and p_view.opts.is_radiological_convention
    window.value = "bone"
    assert t_view.volumes[0].cal_min == p_view.volumes[0].cal_min == -500.0
    with pytest.raises(ValueError, match="prediction shape"):
        viz_niivue.niivue_compare(img, pred[:, :, :-1], truth)


def test_show_3d_takes_niivue_first_when_it_is_installed(monkeypatch):
    pytest.importorskip("ipyniivue")
    from ipyniivue import NiiVue

    img, lab = _two_organ_volume()
    called = []
    monkeypatch.setattr(viz3d, "itkwidgets_status", lambda check_network=True: called.append(1) or (True, ""))
    box = viz3d.show_3d(img, lab, spacing=(1.0, 1.0, 2.0), window_preset="bone")
    assert isinstance(box.children[-1], NiiVue) and not called  # itkwidgets not even considered
    assert box.children[-1].volumes[0].cal_min == -500.0
    monkeypatch.setenv(viz3d.VIEWER_ENV, "static")
    assert not isinstance(viz3d.show_3d(img, lab).children[-1], NiiVue)


def test_captioned_figure_shows_png_alt_text_and_caption():
    """Issue #26: a figure displayed with a "what to look at" caption and alt text; the plain PNG stays in the
    output (papermill runs export it as a file)."""
    import base64
    import html

    from swinunetr_lib.viz.captions import captioned

    fig = viz.new_figure((2, 2))
    fig.add_subplot(111).plot([0, 1], [1, 0])
    shown = captioned(fig, look_at="the line falls <fast> & ends at 0", alt='a falling "line"')
    bundle = shown._repr_mimebundle_()
    png = base64.b64decode(bundle["image/png"])
    import io

    from matplotlib.image import imread

    assert imread(io.BytesIO(png)).shape[:2] == (200, 200)  # the 2 x 2 in figure at 100 dpi
    page = bundle["text/html"]
    assert page.startswith("<figure") and f'src="data:image/png;base64,{bundle["image/png"]}"' in page
    assert f'alt="{html.escape(chr(97) + " falling " + chr(34) + "line" + chr(34), quote=True)}"' in page
    assert "<figcaption" in page and "What to look at:</b> the line falls &lt;fast&gt; &amp; ends at 0" in page
    assert bundle["text/plain"].startswith('[figure] a falling "line"')
    with pytest.raises(ValueError, match="non-empty"):
        captioned(fig, look_at=" ", alt="x")
    with pytest.raises(TypeError, match="matplotlib Figure"):
        captioned(np.zeros((2, 2)), look_at="x", alt="y")


@pytest.mark.parametrize("stem", ["00_quickstart", "01_data_curation", "05_visualize_3d"])
def test_every_figure_of_the_first_notebooks_is_captioned(stem):
    """Each figure made in 00, 01 and 05 (a ``plot_*`` call, or a hand-made ``fig``) goes through ``captioned``."""
    import re

    source = (Path(__file__).resolve().parent.parent / "notebooks" / f"{stem}.py").read_text()
    cells = [c for c in source.split("# %%") if not c.lstrip().startswith("[markdown]")]
    for cell in cells:
        made = len(re.findall(r"\bplot_\w+\(", cell)) + cell.count("new_figure(")
        assert cell.count("captioned(") >= made, cell[:300]
