"""Inference engines: each takes a model and its data and returns an ArviZ DataTree."""

from bigmali.inference.nuts import run_nuts
from bigmali.inference.results import load_run, save_run
from bigmali.inference.svi import run_svi

__all__ = ["run_nuts", "run_svi", "save_run", "load_run"]
