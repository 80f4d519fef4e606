"""bigmali: Big halo Mass And Luminosity Inference.

Infers the galaxy mass-luminosity relation, and every halo's mass, from a survey
catalog of redshifts and observed luminosities.
"""

__version__ = "0.1.0"

from bigmali import precision  # noqa: E402

precision.configure()

from bigmali.catalog import Catalog, read_catalog, validate_catalog, write_catalog  # noqa: E402
from bigmali.datatree import load_run, save_run  # noqa: E402
from bigmali.diagnostics import summary  # noqa: E402
from bigmali.diagnostics.compare import compare  # noqa: E402
from bigmali.diagnostics.conflict import prior_data_conflict  # noqa: E402
from bigmali.diagnostics.convergence import convergence  # noqa: E402
from bigmali.diagnostics.loo import halo_loo  # noqa: E402
from bigmali.diagnostics.model_comparison import compare_priors  # noqa: E402
from bigmali.diagnostics.ppc import posterior_predictive_check  # noqa: E402
from bigmali.diagnostics.report import write_comparison, write_report  # noqa: E402
from bigmali.diagnostics.sbc import read_sbc, run_sbc  # noqa: E402
from bigmali.fit import extend, fit, pointwise_log_likelihood  # noqa: E402
from bigmali.inference.evidence import log_evidence  # noqa: E402
from bigmali.lightcone import simulate  # noqa: E402
from bigmali.mass_prior import MassPrior, load_mass_prior  # noqa: E402
from bigmali.massmap import mass_posterior, massmap  # noqa: E402
from bigmali.relation import HYPERPRIOR_MEAN, HYPERPRIOR_SD, HYPERSEED, Hyper  # noqa: E402
from bigmali.runs_2017 import read_2017_run  # noqa: E402

__all__ = [
    "Catalog",
    "read_catalog",
    "write_catalog",
    "validate_catalog",
    "simulate",
    "MassPrior",
    "load_mass_prior",
    "Hyper",
    "HYPERSEED",
    "HYPERPRIOR_MEAN",
    "HYPERPRIOR_SD",
    "fit",
    "pointwise_log_likelihood",
    "extend",
    "summary",
    "save_run",
    "load_run",
    "compare",
    "mass_posterior",
    "massmap",
    "convergence",
    "posterior_predictive_check",
    "halo_loo",
    "write_report",
    "write_comparison",
    "run_sbc",
    "read_sbc",
    "read_2017_run",
    "log_evidence",
    "prior_data_conflict",
    "compare_priors",
]
