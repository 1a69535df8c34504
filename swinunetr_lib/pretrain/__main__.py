"""``python -m swinunetr_lib.pretrain``: see :func:`swinunetr_lib.pretrain.run.main`."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
