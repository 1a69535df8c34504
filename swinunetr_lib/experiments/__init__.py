"""Experiments on top of the stages: the probe of frozen encoders, no-learning baselines, label efficiency,
notebook 03's run as functions."""
