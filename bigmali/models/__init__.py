"""NumPyro models of bigmali: each is a plain function of the catalog's data.

* ``full``: the literal graphical model, latent ``ln M`` and ``ln L`` per halo;
* ``latent_mass``: ``L`` integrated out analytically, latent ``ln M`` per halo;
* ``collapsed``: ``M`` integrated out as well by exact quadrature; only the four
  hyperparameters are sampled.

The per-halo latents of the first two are sampled in data-centred coordinates
(:mod:`bigmali.models.centering`).
"""

from bigmali.models import collapsed, full, latent_mass

MODELS = {"collapsed": collapsed, "latent_mass": latent_mass, "full": full}

LATENT_SITES = {"latent_mass": ("ln_mass_u",), "full": ("ln_mass_u", "ln_lum_u", "ln_lum")}
"""Per-halo sample sites of each latent model that are not kept in the results."""

__all__ = ["MODELS", "LATENT_SITES", "collapsed", "latent_mass", "full"]
