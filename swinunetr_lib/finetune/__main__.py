"""``python -m swinunetr_lib.finetune``: see :func:`swinunetr_lib.finetune.run.main`."""
import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
