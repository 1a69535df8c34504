"""Figures that say what to look at, and what they show to someone who cannot see them.

:func:`captioned` wraps a matplotlib figure with a *"what to look at"* caption and an alt text. In Jupyter it
displays as an HTML ``<figure>``: the PNG with ``alt`` set (read by screen readers, shown when the image cannot
be), and the caption under it. The same output also carries the plain PNG (``image/png``: what papermill runs
export as figure files, and what a front end without HTML shows) and the alt text as its plain-text form.

Usage, as the last line of a notebook cell::

    captioned(plot_triplanar(ct, labels), look_at="the liver on the screen's left: ...",
              alt="Axial, coronal and sagittal slices of an abdominal CT with 12 organs coloured")
"""
from __future__ import annotations

import base64
import html
from typing import Any

from matplotlib.figure import Figure

from .figures import figure_to_png


class CaptionedFigure:
    """A figure with its caption and alt text; Jupyter shows it once as HTML (PNG + ``alt`` + caption)."""

    def __init__(self, figure: Figure, look_at: str, alt: str) -> None:
        if not isinstance(figure, Figure):
            raise TypeError(f"captioned needs a matplotlib Figure, got {type(figure).__name__}")
        if not look_at.strip() or not alt.strip():
            raise ValueError("a captioned figure needs a non-empty look_at caption and alt text")
        self.figure, self.look_at, self.alt = figure, look_at.strip(), alt.strip()

    def html(self, png: bytes | None = None) -> str:
        """The ``<figure>`` element: the PNG inline (base64), its alt text, the caption."""
        data = base64.b64encode(figure_to_png(self.figure) if png is None else png).decode("ascii")
        return (f'<figure style="margin: 0 0 0.5em 0"><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(self.alt, quote=True)}" style="max-width: 100%"/>'
                f'<figcaption style="font-size: 0.9em"><b>What to look at:</b> {html.escape(self.look_at)}'
                "</figcaption></figure>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        png = figure_to_png(self.figure)
        return {"text/html": self.html(png), "image/png": base64.b64encode(png).decode("ascii"),
                "text/plain": f"[figure] {self.alt}. What to look at: {self.look_at}"}


def captioned(figure: Figure, *, look_at: str, alt: str) -> CaptionedFigure:
    """``figure`` with a "what to look at" caption and an alt text describing it (see the module docstring)."""
    return CaptionedFigure(figure, look_at, alt)
