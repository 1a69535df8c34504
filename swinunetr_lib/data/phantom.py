"""Synthetic abdomen CT phantoms with the 13 BTCV organs labeled: PHANTOMS, not patient data.

API (stable; other modules and notebooks depend on it)::

    ph = make_abdomen_phantom(seed=0, shape=None, spacing=(1.5, 1.5, 2.0))   # -> Phantom
    ph.image   # float32 (X, Y, Z) HU, RAS voxel order (i -> patient Right, j -> Anterior, k -> Superior)
    ph.label   # uint8 (X, Y, Z), BTCV ids 0..13 (see ``labels.BTCV_LABELS``)
    ph.affine  # float64 (4, 4) voxel -> world mm (RAS+), diagonal = spacing
    write_phantom("img.nii.gz", "lab.nii.gz", ph)                            # NIfTI, descrip says PHANTOM
    make_msd_phantom(seed, task="ct_single_organ" | "mr_multichannel", ...)   # MSD-style variants

The anatomy is drawn in a body frame in millimetres (x to the patient's right, y anterior, z superior,
origin at the body centre near L1) and sampled on the requested grid, so the same seed gives the same
anatomy at any spacing. ``shape=None`` covers :data:`DEFAULT_FOV_MM` (384 x 288 x 216 mm). Intensities
follow a portal-venous contrast phase like BTCV's scans (Landman et al. 2015); each organ's mean HU is
``ORGAN_HU[name]`` plus a per-case offset of at most ``HU_JITTER``; Gaussian noise (sigma
``noise_sd``) and a partial-volume blur are added after painting. Each call with the same arguments
returns identical arrays. The default spacing (1.5, 1.5, 2.0) mm is the paper's BTCV resampling
(Tang et al. 2022, Sec. 4); the demo cohort uses 3 mm isotropic (128 x 96 x 72 voxels) to stay CPU-sized.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..utils.files import atomic_path
from .labels import BTCV_LABELS
from .phantom_variability import (
    DEFORM_MM,
    check_variability,
    hu_offsets,
    organ_scale,
    organ_shift,
    random_pose,
    smooth_displacement,
    variability_rng,
    warp_to_pose,
)

PHANTOM_DESCRIP = "SYNTHETIC PHANTOM (swinunetr_lib), not patient data"
DEFAULT_FOV_MM = (384.0, 288.0, 216.0)
HU_JITTER = 10.0  # maximum per-case offset of an organ's mean HU

# Mean HU per structure, portal-venous phase (typical literature values, rounded).
ORGAN_HU: dict[str, float] = {
    "spleen": 120.0, "kidney_cortex": 180.0, "kidney_medulla": 130.0, "gallbladder": 10.0,
    "esophagus": 45.0, "liver": 100.0, "stomach_wall": 60.0, "stomach_content": 20.0,
    "aorta": 190.0, "inferior_vena_cava": 130.0, "portal_splenic_vein": 160.0, "pancreas": 90.0,
    "adrenal_gland": 40.0, "subcutaneous_fat": -100.0, "visceral_fat": -90.0, "muscle": 50.0,
    "bone_cortical": 700.0, "bone_cancellous": 220.0, "disc": 80.0, "csf": 15.0, "lung": -850.0, "bowel": 35.0,
    "air": -1000.0, "outside": -1000.0,
}
# BTCV id -> structure key in ORGAN_HU whose HU describes the organ's bulk.
BTCV_HU_KEY: dict[int, str] = {
    1: "spleen", 2: "kidney_cortex", 3: "kidney_cortex", 4: "gallbladder", 5: "esophagus", 6: "liver",
    7: "stomach_wall", 8: "aorta", 9: "inferior_vena_cava", 10: "portal_splenic_vein", 11: "pancreas",
    12: "adrenal_gland", 13: "adrenal_gland",
}


@dataclasses.dataclass
class Phantom:
    """One phantom volume. ``image``/``label`` have shape (X, Y, Z) in RAS voxel order."""

    image: np.ndarray  # float32 HU (or MR-like intensity, (X, Y, Z, C) for multi-channel variants)
    label: np.ndarray  # uint8 class ids
    affine: np.ndarray  # (4, 4) float64
    seed: int
    hu_offsets: dict[str, float]  # per-structure HU offset applied on top of ORGAN_HU
    label_names: dict[int, str]
    description: str = PHANTOM_DESCRIP

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def organ_hu(self, name: str) -> float:
        """Designed mean HU of structure ``name`` in this case (before noise and blur)."""
        return ORGAN_HU[name] + self.hu_offsets.get(name, 0.0)


class _Canvas:
    """Grid in body-frame mm on which shapes are painted, each evaluated only in its bounding box."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape, self.spacing = shape, np.asarray(spacing, float)
        self.origin = -(np.asarray(shape, float) - 1) / 2 * self.spacing  # world mm of voxel (0, 0, 0)
        self.image = np.full(shape, ORGAN_HU["outside"], np.float32)
        self.label = np.zeros(shape, np.uint8)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
        i0 = np.maximum(np.floor((lo - self.origin) / self.spacing).astype(int), 0)
        i1 = np.minimum(np.ceil((hi - self.origin) / self.spacing).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        sl = tuple(slice(a, b) for a, b in zip(i0, i1, strict=True))
        coords = [self.origin[d] + self.spacing[d] * np.arange(i0[d], i1[d]) for d in range(3)]
        return sl, np.meshgrid(*coords, indexing="ij", sparse=True)

    def paint(self, sl: tuple[slice, ...], mask: np.ndarray, hu: float, label: int | None = None) -> None:
        self.image[sl][mask] = hu
        if label is not None:
            self.label[sl][mask] = label

    def ellipsoid(self, center, axes, hu: float, label: int | None = None, rot_z_deg: float = 0.0,
                  within: np.ndarray | None = None) -> None:
        """Paint an ellipsoid (semi-axes in mm, rotated about z) where ``within`` (full-grid mask) allows."""
        c, a = np.asarray(center, float), np.asarray(axes, float)
        r = a.max()
        got = self.box(c - r, c + r)
        if got is None:
            return
        sl, (x, y, z) = got
        t = np.deg2rad(rot_z_deg)
        u = (x - c[0]) * np.cos(t) + (y - c[1]) * np.sin(t)
        v = -(x - c[0]) * np.sin(t) + (y - c[1]) * np.cos(t)
        mask = (u / a[0]) ** 2 + (v / a[1]) ** 2 + ((z - c[2]) / a[2]) ** 2 <= 1.0
        if within is not None:
            mask &= within[sl]
        self.paint(sl, mask, hu, label)

    def tube(self, points, radius: float, hu: float, label: int | None = None) -> None:
        """Paint a capsule chain of ``radius`` mm through ``points`` (N, 3) mm."""
        pts = np.asarray(points, float)
        for p, q in zip(pts[:-1], pts[1:], strict=True):
            got = self.box(np.minimum(p, q) - radius, np.maximum(p, q) + radius)
            if got is None:
                continue
            sl, (x, y, z) = got
            d = q - p
            t = ((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / max(float(d @ d), 1e-9)
            t = np.clip(t, 0.0, 1.0)
            dist2 = (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 + (z - p[2] - t * d[2]) ** 2
            self.paint(sl, dist2 <= radius**2, hu, label)

    def grid(self) -> list[np.ndarray]:
        return self.box(self.origin, self.origin + self.spacing * (np.asarray(self.shape) - 1))[1]  # type: ignore[index]


def _affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = -(np.asarray(shape, float) - 1) / 2 * np.asarray(spacing, float)
    return aff


def default_shape(spacing: tuple[float, float, float]) -> tuple[int, int, int]:
    """The grid (X, Y, Z) in voxels that covers ``DEFAULT_FOV_MM`` at ``spacing`` mm (``shape=None``)."""
    return tuple(int(round(f / s)) for f, s in zip(DEFAULT_FOV_MM, spacing, strict=True))  # type: ignore[return-value]


def make_abdomen_phantom(
    seed: int,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0),
    noise_sd: float = 15.0,
    blur_mm: float = 1.5,
    variability: float = 0.0,
) -> Phantom:
    """Draw a labeled abdominal CT phantom; identical output for identical arguments.

    Args:
        seed: case seed; varies body size, organ positions/sizes/orientations and HU offsets.
        shape: grid (X, Y, Z) in voxels, centred on the body; ``None`` covers ``DEFAULT_FOV_MM``.
        spacing: voxel size in mm (x, y, z). Default (1.5, 1.5, 2.0): the paper's BTCV spacing.
        noise_sd: standard deviation of additive Gaussian noise in HU.
        blur_mm: sigma in mm of the Gaussian partial-volume blur applied before the noise.
        variability: 0..1, how much cases differ as patients do (:mod:`swinunetr_lib.data.phantom_variability`:
            global rotation about z up to 15 deg, anisotropic scale +-12 %, shift +-20 mm, per-organ shift/size, a
            smooth deformation and HU offsets up to 40 HU, all at 1). 0 (default): the template alone, as before.

    Returns:
        :class:`Phantom` with ``image`` float32 (X, Y, Z) HU, ``label`` uint8 (X, Y, Z) BTCV ids 0..13.
    """
    spacing = tuple(float(s) for s in spacing)  # type: ignore[assignment]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive numbers in mm, got {spacing}")
    shape = default_shape(spacing) if shape is None else tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three ints >= 8, got {shape}")
    variability = check_variability(variability)
    rng = np.random.default_rng(seed)
    vr = variability_rng(seed) if variability > 0 else None  # its own stream: the template's draws are unchanged
    cv = _Canvas(shape, spacing)  # type: ignore[arg-type]
    off = {k: float(rng.uniform(-HU_JITTER, HU_JITTER)) for k in ORGAN_HU if k not in ("air", "outside")}
    if vr is not None:
        off = {k: off[k] + v for k, v in hu_offsets(vr, variability, list(off)).items()}
    hu = {k: ORGAN_HU[k] + off.get(k, 0.0) for k in ORGAN_HU}

    def j(scale: float = 8.0) -> np.ndarray:  # position jitter in mm
        d = rng.uniform(-scale, scale, 3)
        return d if vr is None else d + organ_shift(vr, variability)

    def s(v: float = 0.12) -> float:  # size factor
        f = float(rng.uniform(1 - v, 1 + v))
        return f if vr is None else f * organ_scale(vr, variability)

    # Body outline: elliptic cylinder; subcutaneous fat, abdominal-wall muscle, visceral fat inside.
    bx, by = 160.0 * s(0.08), 115.0 * s(0.08)
    fat, wall = rng.uniform(12, 28), rng.uniform(8, 12)
    x, y, z = cv.grid()
    taper = 1.0 - 0.0008 * np.abs(z)  # slightly narrower away from the centre
    rho = lambda ax, ay: (x / (ax * taper)) ** 2 + (y / (ay * taper)) ** 2  # noqa: E731
    body = rho(bx, by) <= 1.0
    inner_muscle = rho(bx - fat, by - fat) <= 1.0
    cavity = rho(bx - fat - wall, by - fat - wall) <= 1.0
    cv.image[body] = hu["subcutaneous_fat"]
    cv.image[inner_muscle] = hu["muscle"]
    cv.image[cavity] = hu["visceral_fat"]

    # Lungs above a dome-shaped diaphragm (higher on the right), inside the rib cage; mediastinum between.
    dome_r, dome_l = 80.0 + rng.uniform(-8, 8), 70.0 + rng.uniform(-8, 8)
    dome = np.where(x > 0, dome_r, dome_l) - 0.004 * (x ** 2) * 0.5 - 0.003 * (y + 20) ** 2
    lung = cavity & (z > dome) & (np.abs(x) > 32) & (rho(bx - fat - wall - 6, by - fat - wall - 6) <= 1.0)
    cv.image[lung] = hu["lung"]
    below = cavity & (z <= dome)  # abdominal cavity under the diaphragm

    # Bowel loops in the lower and anterior abdomen (unlabeled distractors, some with gas).
    for _ in range(14):
        c = np.array([rng.uniform(-90, 90), rng.uniform(-10, 70), rng.uniform(-100, 10)])
        cv.ellipsoid(c, rng.uniform(12, 24, 3), hu["bowel"], 0, within=cavity)
        if rng.random() < 0.5:
            cv.ellipsoid(c + [0, 5, 0], rng.uniform(5, 9, 3), ORGAN_HU["air"], 0, within=cavity)

    # Spine (posterior midline), spinal canal, paraspinal and psoas muscles; ribs in the upper half.
    sy = -by + fat + wall + 38.0
    cv.tube([[0, sy + 10, -200], [0, sy + 10, 200]], 26.0, hu["muscle"])  # paraspinal bed
    for side in (-1, 1):
        cv.tube([[side * 38, sy - 18, -200], [side * 38, sy - 18, 200]], 22.0, hu["muscle"])
        cv.tube([[side * 35, sy + 12, -110], [side * 42, sy + 25, 20]], 13.0 * s(), hu["muscle"])  # psoas
    cv.tube([[0, sy + 12, -200], [0, sy + 12, 200]], 20.0, hu["bone_cortical"])
    cv.tube([[0, sy + 12, -200], [0, sy + 12, 200]], 17.0, hu["bone_cancellous"])
    for zd in np.arange(-200.0, 200.0, 32.0) + rng.uniform(0, 32):  # intervertebral discs
        cv.tube([[0, sy + 12, zd - 3], [0, sy + 12, zd + 3]], 20.0, hu["disc"])
    cv.tube([[0, sy - 14, -200], [0, sy - 14, 200]], 12.0, hu["bone_cortical"])  # posterior arch
    cv.tube([[0, sy - 14, -200], [0, sy - 14, 200]], 7.0, hu["csf"])  # canal
    rx, ry = bx - fat - wall / 2, by - fat - wall / 2
    for zr in np.arange(-5.0, 200.0, 26.0) + rng.uniform(-5, 5):  # rib arcs, posterior end higher
        phi = np.deg2rad(np.linspace(25.0, 150.0, 12))
        for side in (-1, 1):
            pts = np.stack([side * rx * np.sin(phi), ry * np.cos(phi), zr - 15.0 * np.cos(phi)], 1)
            cv.tube(pts, 5.0, hu["bone_cortical"])

    # The 13 BTCV organs (ids from labels.BTCV_LABELS), painted so that later ones win on overlap.
    ids = {name: i for i, name in BTCV_LABELS.items()}
    liver_c = np.array([70.0, 5.0, 40.0]) + j()
    cv.ellipsoid(liver_c, np.array([80, 82, 72]) * s(), hu["liver"], ids["liver"], rot_z_deg=rng.uniform(-10, 10),
                 within=below)
    cv.ellipsoid(liver_c + [-75, 38, 12] + j(5), np.array([50, 35, 32]) * s(), hu["liver"], ids["liver"],
                 within=below)
    spleen_c = np.array([-88.0, -38.0, 42.0]) + j()
    cv.ellipsoid(spleen_c, np.array([24, 52, 44]) * s(), hu["spleen"], ids["spleen"],
                 rot_z_deg=-30 + rng.uniform(-12, 12), within=below)
    stomach_c = np.array([-50.0, 38.0, 38.0]) + j()
    st_ax, st_rot = np.array([40, 34, 50]) * s(), 25 + rng.uniform(-10, 10)
    cv.ellipsoid(stomach_c, st_ax, hu["stomach_wall"], ids["stomach"], rot_z_deg=st_rot, within=below)
    cv.ellipsoid(stomach_c, st_ax - 5, hu["stomach_content"], None, rot_z_deg=st_rot,
                 within=(cv.label == ids["stomach"]))
    cv.ellipsoid(stomach_c + [0, 0, st_ax[2] * 0.55], st_ax * [0.8, 0.8, 0.35], ORGAN_HU["air"], None,
                 rot_z_deg=st_rot, within=(cv.label == ids["stomach"]))  # gas cap, still labeled stomach
    gb_c = liver_c + [-12, 48, -38] + j(5)
    cv.ellipsoid(gb_c, np.array([16, 15, 32]) * s(), hu["gallbladder"], ids["gallbladder"],
                 rot_z_deg=rng.uniform(-20, 20))
    for name, side, zc in (("kidney_right", 1, -18.0), ("kidney_left", -1, -6.0)):
        c = np.array([side * 68.0, sy + 18, zc]) + j()
        ax = np.array([27, 24, 52]) * s()
        cv.ellipsoid(c, ax, hu["kidney_cortex"], ids[name], rot_z_deg=side * 20 + rng.uniform(-8, 8))
        cv.ellipsoid(c + [-side * 6, 4, 0], ax * 0.55, hu["kidney_medulla"], None, rot_z_deg=side * 20,
                     within=(cv.label == ids[name]))
        adr = np.array([side * 40.0, sy + 28, zc + 0.8 * ax[2] + 8]) + j(4)
        adrenal = ids[f"adrenal_gland_{'right' if side > 0 else 'left'}"]
        cv.ellipsoid(adr, np.array([8, 14, 17]) * s(), hu["adrenal_gland"], adrenal,
                     rot_z_deg=side * 35 + rng.uniform(-10, 10))
    pancreas_pts = np.array([[28, 5, -12], [5, 12, -2], [-30, 4, 6], [-62, -18, 22]]) + j(6)
    cv.tube(pancreas_pts[:1], 17.0 * s(), hu["pancreas"], ids["pancreas"])
    cv.tube(pancreas_pts, 11.0 * s(), hu["pancreas"], ids["pancreas"])
    ao_x, ao_y = -18.0 + rng.uniform(-4, 4), sy + 48.0
    cv.tube([[ao_x, ao_y, -200], [ao_x, ao_y, 200]], 12.0 * s(0.1), hu["aorta"], ids["aorta"])
    ivc_x = 26.0 + rng.uniform(-4, 4)
    cv.tube([[ivc_x, ao_y - 2, -200], [ivc_x + 4, ao_y + 4, liver_c[2] + 25]], 11.0 * s(0.1),
            hu["inferior_vena_cava"], ids["inferior_vena_cava"])
    conf = pancreas_pts[1] + [0, -10, 0]  # portal confluence behind the pancreatic neck
    cv.tube([conf, liver_c + [-25, 0, -5]], 7.5, hu["portal_splenic_vein"], ids["portal_and_splenic_veins"])
    cv.tube([conf, pancreas_pts[2] + [0, -12, 0], spleen_c + [18, 20, -10]], 5.0,
            hu["portal_splenic_vein"], ids["portal_and_splenic_veins"])
    es_x = ao_x + 4
    cv.tube([[es_x, ao_y + 10, 200], [es_x, ao_y + 18, stomach_c[2] + 35], stomach_c + [15, -10, 30]], 9.0,
            hu["esophagus"], ids["esophagus"])

    if vr is not None:  # the case's pose and a smooth deformation, on the painted volume (before blur and noise)
        pose = random_pose(vr, variability)
        disp = smooth_displacement(vr, shape, DEFORM_MM * variability)  # type: ignore[arg-type]
        cv.image, cv.label = warp_to_pose(cv.image, cv.label, spacing, pose, disp)  # type: ignore[arg-type]

    # Partial-volume blur (sigma in mm -> voxels), then noise; clip to a CT's range.
    img = ndimage.gaussian_filter(cv.image, sigma=[blur_mm / sp for sp in spacing]) if blur_mm > 0 else cv.image
    img = img + rng.normal(0.0, noise_sd, img.shape).astype(np.float32)
    img = np.clip(img, -1024.0, 3071.0).astype(np.float32)
    return Phantom(image=img, label=cv.label, affine=_affine(shape, spacing), seed=seed,  # type: ignore[arg-type]
                   hu_offsets=off, label_names=dict(BTCV_LABELS))


def make_msd_phantom(
    seed: int,
    task: Literal["ct_single_organ", "mr_multichannel"] = "ct_single_organ",
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    organ: str = "spleen",
    n_channels: int = 2,
) -> Phantom:
    """Medical-Segmentation-Decathlon-style variants of the abdomen phantom.

    - ``"ct_single_organ"``: CT (X, Y, Z), label 1 = ``organ`` (like MSD Task09_Spleen), 0 elsewhere.
    - ``"mr_multichannel"``: MR-like image (X, Y, Z, C) with ``n_channels`` contrasts (e.g. T1/T2 like
      MSD Task05_Prostate's 2 channels or BRATS' 4), label 1 = liver, 2 = kidneys, 3 = spleen; each channel
      maps every tissue to a different signal (arbitrary units, not HU), so channels carry distinct information.
    """
    base = make_abdomen_phantom(seed, shape=shape, spacing=spacing)
    ids = {name: i for i, name in BTCV_LABELS.items()}
    if task == "ct_single_organ":
        if organ not in ids:
            raise ValueError(f"organ {organ!r} is not a BTCV organ; choose one of {sorted(ids)}")
        label = (base.label == ids[organ]).astype(np.uint8)
        return dataclasses.replace(base, label=label, label_names={0: "background", 1: organ})
    if task != "mr_multichannel":
        raise ValueError(f"task must be 'ct_single_organ' or 'mr_multichannel', got {task!r}")
    if not 1 <= n_channels <= 4:
        raise ValueError(f"n_channels must be 1..4, got {n_channels}")
    rng = np.random.default_rng(seed + 10_000)
    hu = base.image
    # Piecewise-linear HU -> signal maps per channel: T1-like (fat bright), T2-like (fluid bright), ...
    knots = np.array([-1000.0, -100.0, 0.0, 60.0, 110.0, 200.0, 1000.0])
    maps = [np.array([0, 900, 250, 450, 600, 500, 150]), np.array([0, 700, 950, 350, 300, 600, 100]),
            np.array([0, 100, 600, 500, 800, 400, 200]), np.array([0, 300, 200, 800, 400, 700, 300])]
    chans = [np.interp(hu, knots, m * rng.uniform(0.9, 1.1)).astype(np.float32) for m in maps[:n_channels]]
    bias = np.linspace(0.85, 1.15, hu.shape[0], dtype=np.float32)[:, None, None]  # coil-like bias field
    img = np.stack([c * bias + rng.normal(0, 20, hu.shape).astype(np.float32) for c in chans], axis=-1)
    label = np.zeros_like(base.label)
    label[base.label == ids["liver"]] = 1
    label[np.isin(base.label, [ids["kidney_right"], ids["kidney_left"]])] = 2
    label[base.label == ids["spleen"]] = 3
    return dataclasses.replace(base, image=np.clip(img, 0, None), label=label,
                               label_names={0: "background", 1: "liver", 2: "kidney", 3: "spleen"},
                               description=PHANTOM_DESCRIP + f", MR-like {n_channels}-channel")


def write_phantom(path_image: str | os.PathLike[str], path_label: str | os.PathLike[str], phantom: Phantom) -> None:
    """Write image (float32, or int16 HU for CT) and label (uint8) as NIfTI; ``descrip`` marks them as phantoms."""
    img = phantom.image
    is_ct = img.ndim == 3
    data = np.round(img).astype(np.int16) if is_ct else img.astype(np.float32)
    for arr, path, what in ((data, path_image, "image"), (phantom.label, path_label, "label")):
        nii = nib.Nifti1Image(arr, phantom.affine)
        nii.header["descrip"] = f"{phantom.description[:60]} {what}"[:79].encode()
        nii.header.set_xyzt_units("mm")
        nii.set_qform(phantom.affine, code=1)
        nii.set_sform(phantom.affine, code=1)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            nib.save(nii, tmp)
