"""Colour-vision deficiency simulation and perceptual colour distances, to check the suite's palettes.

About 8 % of men see colours differently (mostly deuteranomaly and protanomaly; tritanopia is rare). A palette is
safe when its colours stay apart as such viewers see them. :func:`simulate` applies the Machado, Oliveira & Fernandes
(2009) matrices at full severity (protanopia, deuteranopia, tritanopia) in linear RGB; :func:`to_lab` converts
sRGB to CIELAB (D65), where a Euclidean distance (CIE76 Delta E) of ~2.3 is just noticeable and ~10+ is plainly
different at a glance; :func:`min_distance` is the smallest pairwise distance of a palette under one vision.

Colours are RGB in [0, 1], shape (N, 3).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

VISIONS = ("normal", "protanopia", "deuteranopia", "tritanopia")

MACHADO_2009: dict[str, np.ndarray] = {
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779],
                            [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.308167]]),
}
"""Machado et al. (2009), Table "severity 1.0": linear-RGB matrices simulating dichromatic vision."""


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear RGB (IEC 61966-2-1)."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB in [0, 1] (clipped)."""
    c = np.clip(np.asarray(lin, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def simulate(rgb: np.ndarray, vision: str) -> np.ndarray:
    """``rgb`` (..., 3) sRGB in [0, 1] as seen with ``vision`` (one of :data:`VISIONS`), sRGB in [0, 1]."""
    if vision == "normal":
        return np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    if vision not in MACHADO_2009:
        raise ValueError(f"vision must be one of {VISIONS}, got {vision!r}")
    return linear_to_srgb(srgb_to_linear(rgb) @ MACHADO_2009[vision].T)


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] -> CIELAB (..., 3), D65 white."""
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = srgb_to_linear(rgb) @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def pairwise_distances(rgb: np.ndarray, vision: str = "normal") -> dict[tuple[int, int], float]:
    """CIE76 Delta E of every pair (i, j), i < j, of the colours ``rgb`` (N, 3) as seen with ``vision``."""
    lab = to_lab(simulate(np.asarray(rgb, dtype=np.float64).reshape(-1, 3), vision))
    return {(i, j): float(np.linalg.norm(lab[i] - lab[j])) for i, j in combinations(range(len(lab)), 2)}


def min_distance(rgb: np.ndarray, vision: str = "normal") -> tuple[float, tuple[int, int]]:
    """The smallest pairwise Delta E of ``rgb`` (N >= 2, 3) under ``vision``, and the pair (i, j) that has it."""
    dist = pairwise_distances(rgb, vision)
    if not dist:
        raise ValueError("a palette needs at least 2 colours")
    pair = min(dist, key=dist.__getitem__)
    return dist[pair], pair


def palette_report(colors: Mapping[int, Sequence[float]] | Sequence[Sequence[float]],
                   names: Mapping[int, str] | None = None) -> dict[str, tuple[float, str]]:
    """Per vision, the smallest pairwise Delta E of a palette (RGB in [0, 1] or 0-255, as a mapping id -> colour
    or a list) and which two entries have it, named by ``names`` where given."""
    keys = list(colors) if isinstance(colors, Mapping) else list(range(len(colors)))
    rgb = np.array([colors[k] for k in keys], dtype=np.float64)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    out = {}
    for vision in VISIONS:
        d, (i, j) = min_distance(rgb, vision)
        a, b = ((names or {}).get(keys[i], str(keys[i])), (names or {}).get(keys[j], str(keys[j])))
        out[vision] = (round(d, 2), f"{a} / {b}")
    return out
