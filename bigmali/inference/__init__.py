"""Inference engines, behind one interface: see :mod:`bigmali.inference.engines`.

``nuts``, ``nuts_gibbs`` (:mod:`.nuts`), ``svi`` (:mod:`.svi`), ``is_prior`` and ``is_proposal``
(:mod:`.importance`), ``pmmh`` (:mod:`.pmmh`) and ``nuts_is``; :mod:`.laplace` gives the
Laplace approximation they start from, :mod:`.evidence` the marginal likelihood.
"""

from bigmali.inference.engines import ENGINES, Engine, Posterior, register
from bigmali.inference.nuts import run_nuts
from bigmali.inference.svi import run_svi

__all__ = ["ENGINES", "Engine", "Posterior", "register", "run_nuts", "run_svi"]
