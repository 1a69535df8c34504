"""Tooling for the lessons: the papermill runner (``python -m swinunetr_lib.notebooks``), exercises,
workshop checks, precomputed-run archives."""
