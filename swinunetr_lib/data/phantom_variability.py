"""Patient-like case-to-case variability for the abdomen phantoms (``make_abdomen_phantom(..., variability=v)``).

With ``variability=0`` (the default) every phantom is one template with ~1 voxel of jitter at 6 mm, so copying one
case's label map onto another already scores Dice ~0.5 (issue #25). A setting ``v`` in [0, 1] adds, drawn from a
random stream of its own (:func:`variability_rng`, so the template's draws and thus ``v = 0`` are unchanged):

- per-structure HU offsets of up to ``v * MAX_HU_OFFSET`` (40 HU at 1; the template's ``HU_JITTER`` is 10 HU),
- per-organ shifts of up to ``v * MAX_ORGAN_SHIFT_MM`` and size factors ``1 +- v * MAX_ORGAN_SCALE`` on top of the
  template's (applied where the phantom draws each organ's position and size),
- a global pose: rotation about z up to ``v * MAX_ROTATION_DEG``, an anisotropic scale ``1 +- v * MAX_SCALE`` per
  axis, a translation up to ``v * MAX_SHIFT_MM`` per axis (:func:`random_pose`),
- a smooth random deformation of up to ~``v * DEFORM_MM`` (:func:`smooth_displacement`),

the last two applied to the painted (piecewise-constant) image and label before the partial-volume blur and the
noise (:func:`warp_to_pose`), so blur and noise stay those of a scan. Magnitudes are rough inter-patient ranges of
abdominal CT at the same scanner setup (body size, patient placement, organ shape), not fitted to data.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

MAX_ROTATION_DEG = 15.0   # rotation about z (patient's long axis) at variability 1
MAX_SCALE = 0.12          # per-axis scale 1 +- this at variability 1 (body and organs together)
MAX_SHIFT_MM = 20.0       # translation per axis at variability 1
MAX_ORGAN_SHIFT_MM = 10.0  # extra per-organ shift per axis at variability 1 (the template already jitters ~8 mm)
MAX_ORGAN_SCALE = 0.15    # extra per-organ size factor 1 +- this at variability 1
MAX_HU_OFFSET = 40.0      # per-structure mean-HU offset at variability 1 (on top of the template's HU_JITTER)
DEFORM_MM = 8.0           # amplitude of the smooth deformation at variability 1
DEFORM_CONTROL = 5        # control points per axis of the deformation (wavelength ~ field of view / 4)
_STREAM = 0x7A81          # mixed into the seed: the variability's own random stream


@dataclasses.dataclass(frozen=True)
class Pose:
    """Body frame -> scanner frame: ``p = R_z(rotation_deg) @ diag(scale) @ q + shift_mm`` (mm, about the grid
    centre)."""

    rotation_deg: float
    scale: tuple[float, float, float]
    shift_mm: tuple[float, float, float]


def check_variability(variability: float) -> float:
    """``variability`` as a float in [0, 1], else ValueError naming it."""
    try:
        v = float(variability)
    except (TypeError, ValueError):
        raise ValueError(f"variability must be a number in [0, 1], got {variability!r}") from None
    if isinstance(variability, bool) or not 0.0 <= v <= 1.0:
        raise ValueError(f"variability must be a number in [0, 1], got {variability!r}")
    return v


def variability_rng(seed: int) -> np.random.Generator:
    """The random stream of a case's variability, separate from the template's ``default_rng(seed)``."""
    return np.random.default_rng([int(seed), _STREAM])


def organ_shift(rng: np.random.Generator, variability: float) -> np.ndarray:
    """Extra per-organ shift (3,) in mm, uniform in +-``variability * MAX_ORGAN_SHIFT_MM`` per axis."""
    return rng.uniform(-1.0, 1.0, 3) * MAX_ORGAN_SHIFT_MM * variability


def organ_scale(rng: np.random.Generator, variability: float) -> float:
    """Extra per-organ size factor, uniform in 1 +- ``variability * MAX_ORGAN_SCALE``."""
    return 1.0 + float(rng.uniform(-1.0, 1.0)) * MAX_ORGAN_SCALE * variability


def hu_offsets(rng: np.random.Generator, variability: float, names: list[str]) -> dict[str, float]:
    """Per-structure mean-HU offsets, uniform in +-``variability * MAX_HU_OFFSET``, in the order of ``names``."""
    return {k: float(rng.uniform(-1.0, 1.0)) * MAX_HU_OFFSET * variability for k in names}


def random_pose(rng: np.random.Generator, variability: float) -> Pose:
    """A case's global pose: rotation about z, anisotropic scale and translation, each uniform in its range."""
    rot = float(rng.uniform(-1.0, 1.0)) * MAX_ROTATION_DEG * variability
    scale = tuple(float(v) for v in 1.0 + rng.uniform(-1.0, 1.0, 3) * MAX_SCALE * variability)
    shift = tuple(float(v) for v in rng.uniform(-1.0, 1.0, 3) * MAX_SHIFT_MM * variability)
    return Pose(rot, scale, shift)  # type: ignore[arg-type]


def smooth_displacement(rng: np.random.Generator, shape: tuple[int, int, int], amplitude_mm: float,
                        n_control: int = DEFORM_CONTROL) -> np.ndarray:
    """A smooth random displacement field (3, X, Y, Z) in mm: ``n_control``^3 control values uniform in
    +-``amplitude_mm`` per component, interpolated over the grid with cubic splines."""
    ctrl = rng.uniform(-1.0, 1.0, (3, n_control, n_control, n_control)) * amplitude_mm
    zoom = [s / n_control for s in shape]
    out = np.stack([ndimage.zoom(c, zoom, order=3, mode="nearest", grid_mode=True) for c in ctrl])
    return out[:, : shape[0], : shape[1], : shape[2]]


def warp_to_pose(image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float], pose: Pose,
                 displacement: np.ndarray | None = None, fill_hu: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resample a painted (piecewise-constant) ``image`` and ``label`` (X, Y, Z), drawn in the body frame on a grid
    centred on the body, into the scanner frame of ``pose``: each output voxel at ``p`` (mm about the grid centre)
    reads the body frame at ``diag(1/scale) R^-1 (p - shift) + displacement(p)``, nearest neighbour (labels stay
    ids, HU stay the designed values). Outside the painted grid the nearest edge voxel is repeated (the body goes
    on along z); ``fill_hu`` instead fills it with a constant. Returns (image, label) with the input dtypes."""
    shape = np.asarray(image.shape)
    sp = np.asarray(spacing, float)
    centre = (shape - 1) / 2.0
    axes = [(np.arange(n) - c) * s for n, c, s in zip(shape, centre, sp, strict=True)]
    p = np.stack(np.meshgrid(*axes, indexing="ij"))
    p = p - np.asarray(pose.shift_mm, float)[:, None, None, None]
    t = np.deg2rad(pose.rotation_deg)
    x = np.cos(t) * p[0] + np.sin(t) * p[1]  # R^-1 about z
    y = -np.sin(t) * p[0] + np.cos(t) * p[1]
    q = np.stack([x, y, p[2]]) / np.asarray(pose.scale, float)[:, None, None, None]
    if displacement is not None:
        q = q + displacement
    idx = q / sp[:, None, None, None] + centre[:, None, None, None]
    mode, cval = ("nearest", 0.0) if fill_hu is None else ("constant", float(fill_hu))
    img = ndimage.map_coordinates(image, idx, order=0, mode=mode, cval=cval).astype(image.dtype)
    lab = ndimage.map_coordinates(label, idx, order=0, mode=mode if fill_hu is None else "constant", cval=0)
    return img, lab.astype(label.dtype)
