"""``python -m swinunetr_lib.notebooks``: see :func:`swinunetr_lib.notebooks.runner.main`."""
import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
