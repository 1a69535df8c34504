"""``python -m swinunetr_lib.notebooks``: see :func:`swinunetr_lib.notebooks.runner.main`; ``... sweep`` (a notebook
over a grid of parameters): :func:`swinunetr_lib.notebooks.sweep.main`."""
import sys

from .runner import main
from .sweep import main as sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main(sys.argv[2:]) if sys.argv[1:2] == ["sweep"] else main())
