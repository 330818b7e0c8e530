"""Continuous training: monitor -> decide -> retrain -> judge fairly -> roll out
(``ray_jobs.continuous_training``). ``inputs`` reads what is added to the reference data;
``loop`` runs and records one CT run."""

from raylane.continuous.inputs import new_labelled_rows
from raylane.continuous.loop import RESULT_MARKER, CTResult, render, run_continuous_training

__all__ = ["RESULT_MARKER", "CTResult", "new_labelled_rows", "render", "run_continuous_training"]
