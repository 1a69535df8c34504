"""``python -m swinunetr_lib.bench``: see :func:`swinunetr_lib.bench.ssl.main`."""
import sys

from .ssl import main

if __name__ == "__main__":
    sys.exit(main())
