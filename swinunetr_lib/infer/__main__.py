"""``python -m swinunetr_lib.infer``: see :func:`swinunetr_lib.infer.predict.main`."""
import sys

from .predict import main

if __name__ == "__main__":
    sys.exit(main())
