"""The intervals of reported results: :mod:`swinunetr_lib.utils.intervals` (moved to the ground floor so that the
notebook tooling's sweep summary uses the same t interval); this name stays for the experiments and notebooks that
import it."""
from ..utils.intervals import Interval, mean_interval, paired_interval, verdict

__all__ = ["Interval", "mean_interval", "paired_interval", "verdict"]
