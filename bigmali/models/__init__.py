"""NumPyro models of bigmali: each is a plain function of the catalog's data.

``collapsed`` integrates both L and M out (exact quadrature) and samples only the four
hyperparameters. The latent-mass and full models of the inference issue are not in this
release yet.
"""

from bigmali.models import collapsed

MODELS = {"collapsed": collapsed}

__all__ = ["MODELS", "collapsed"]
