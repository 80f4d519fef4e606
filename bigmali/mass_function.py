"""Halo mass function tables from hmf, computed once and cached on disk.

A :class:`MassFunctionTable` holds hmf's ``dn/dm`` on a grid of redshifts and masses,
exactly as hmf returns it (masses in Msun/h, ``dn/dm`` in h^4 Mpc^-3 Msun^-1). The
mass prior (:mod:`bigmali.mass_prior`) and the lightcone (:mod:`bigmali.lightcone`)
are both built from it, so the masses and the number counts of a mock share one
mass function and one cosmology.

The default table is the 2017 one: hmf ``Tinker10`` in the ``WMAP5`` cosmology,
``log10 m`` from 10.2358590918 to 14.3277327776 in steps of 0.01 (410 masses) at the
20 redshifts ``linspace(0, 3.5, 20)``. It ships with the package
(``scripts/make_default_prior_table.py`` regenerates it), so the default needs no hmf
run at all. Any other setting is computed with hmf once and then read from the cache
directory (``$BIGMALI_CACHE_DIR``, default ``~/.cache/bigmali``).

hmf's own defaults are kept for everything the 2017 code did not set (``sigma_8``,
``n``, the CAMB transfer function); they are recorded in the table's metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = [
    "LOG10_MMIN_2017",
    "LOG10_MMAX_2017",
    "DLOG10M_2017",
    "Z_GRID_2017",
    "MassFunctionTable",
    "TableSpec",
    "compute_table",
    "load_table",
    "read_table",
    "write_table",
    "resolve_cosmology",
    "cache_dir",
]

LOG10_MMIN_2017 = 10.2358590918
LOG10_MMAX_2017 = 14.3277327776
DLOG10M_2017 = 0.01
Z_GRID_2017 = tuple(float(z) for z in np.linspace(0.0, 3.5, 20))


@dataclass(frozen=True)
class TableSpec:
    """What an hmf table is computed from. Equal specs give equal tables (and cache files)."""

    hmf_model: str = "Tinker10"
    cosmology: str = "WMAP5"
    log10_mmin: float = LOG10_MMIN_2017
    log10_mmax: float = LOG10_MMAX_2017
    dlog10m: float = DLOG10M_2017
    z_grid: tuple[float, ...] = Z_GRID_2017

    def key(self) -> str:
        """A short stable name for the cache file of this spec."""
        text = json.dumps(
            [
                self.hmf_model,
                self.cosmology,
                repr(self.log10_mmin),
                repr(self.log10_mmax),
                repr(self.dlog10m),
                [repr(z) for z in self.z_grid],
            ]
        )
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return f"hmf_{self.hmf_model}_{self.cosmology}_{digest}"


@dataclass(frozen=True)
class MassFunctionTable:
    """hmf's mass function on a (redshift, mass) grid.

    Attributes:
        z: redshifts of the tables, shape (nz,).
        m: masses in Msun/h, shape (nm,), as hmf returns them.
        dndm: comoving ``dn/dm`` in h^4 Mpc^-3 Msun^-1, shape (nz, nm).
        h: the dimensionless Hubble constant of the table's cosmology.
        spec: the settings it was computed with.
        meta: provenance (hmf version, sigma_8, n, transfer model).
    """

    z: np.ndarray
    m: np.ndarray
    dndm: np.ndarray
    h: float
    spec: TableSpec
    meta: dict = field(default_factory=dict, compare=False)

    def number_density(self) -> np.ndarray:
        """Comoving number density of halos inside the mass range at each table redshift, in Mpc^-3.

        ``n(z) = h^3 * integral dn/dm dm`` (trapezoid over the table's masses).
        """
        return np.trapezoid(self.dndm, self.m, axis=1) * self.h**3


def resolve_cosmology(cosmology):
    """An astropy cosmology from a realization name (``"WMAP5"``, ``"Planck18"``, ...) or an instance."""
    from astropy import cosmology as ac

    if isinstance(cosmology, ac.Cosmology):
        return cosmology
    available = tuple(ac.realizations.available)
    if cosmology not in available:
        raise ValueError(f"cosmology {cosmology!r} is not an astropy realization; choose one of {', '.join(available)}")
    return getattr(ac.realizations, cosmology)


def compute_table(spec: TableSpec = TableSpec()) -> MassFunctionTable:
    """Run hmf for every redshift of ``spec`` (a fraction of a second per table)."""
    import warnings

    import hmf
    from hmf import MassFunction
    from hmf.mass_function import fitting_functions

    if not hasattr(fitting_functions, spec.hmf_model):
        raise ValueError(f"hmf has no fitting function {spec.hmf_model!r}")
    cosmo = resolve_cosmology(spec.cosmology)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mf = MassFunction(
            z=spec.z_grid[0],
            Mmin=spec.log10_mmin,
            Mmax=spec.log10_mmax,
            dlog10m=spec.dlog10m,
            hmf_model=spec.hmf_model,
            cosmo_model=cosmo,
            transfer_params={"extrapolate_with_eh": True},
        )
        rows = []
        for z in spec.z_grid:
            mf.update(z=z)
            rows.append(np.array(mf.dndm, dtype=np.float64))
        m = np.array(mf.m, dtype=np.float64)
    meta = {
        "hmf_version": hmf.__version__,
        "sigma_8": float(mf.sigma_8),
        "n": float(mf.n),
        "transfer_model": mf.transfer_model.__name__,
        "cosmology_repr": repr(cosmo),
    }
    return MassFunctionTable(z=np.array(spec.z_grid), m=m, dndm=np.vstack(rows), h=float(cosmo.h), spec=spec, meta=meta)


def write_table(table: MassFunctionTable, path) -> None:
    """Write a table as ECSV in long form (columns z, mass, dndm) with its spec and provenance."""
    from astropy.table import Table

    nz, nm = table.dndm.shape
    t = Table(
        {"z": np.repeat(table.z, nm), "mass": np.tile(table.m, nz), "dndm": table.dndm.ravel()},
    )
    t["mass"].unit = "Msun / h"
    t["dndm"].unit = "h4 / (Mpc3 Msun)"
    spec = table.spec
    t.meta.update(
        {
            "hmf_model": spec.hmf_model,
            "cosmology": spec.cosmology,
            "log10_mmin": spec.log10_mmin,
            "log10_mmax": spec.log10_mmax,
            "dlog10m": spec.dlog10m,
            "h": table.h,
            **table.meta,
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from bigmali.files import atomic_path

    with atomic_path(path) as tmp:
        t.write(tmp, format="ascii.ecsv", overwrite=True)


def read_table(path) -> MassFunctionTable:
    """Read a table written by :func:`write_table`."""
    from astropy.table import Table

    t = Table.read(path, format="ascii.ecsv")
    z = np.unique(np.asarray(t["z"], dtype=np.float64))
    nz = len(z)
    nm = len(t) // nz
    m = np.asarray(t["mass"][:nm], dtype=np.float64)
    dndm = np.asarray(t["dndm"], dtype=np.float64).reshape(nz, nm)
    meta = dict(t.meta)
    spec = TableSpec(
        hmf_model=meta.pop("hmf_model"),
        cosmology=meta.pop("cosmology"),
        log10_mmin=float(meta.pop("log10_mmin")),
        log10_mmax=float(meta.pop("log10_mmax")),
        dlog10m=float(meta.pop("dlog10m")),
        z_grid=tuple(float(v) for v in z),
    )
    h = float(meta.pop("h"))
    return MassFunctionTable(z=z, m=m, dndm=dndm, h=h, spec=spec, meta=meta)


def cache_dir() -> Path:
    """Where computed tables are kept: ``$BIGMALI_CACHE_DIR`` or ``~/.cache/bigmali``."""
    return Path(os.environ.get("BIGMALI_CACHE_DIR", Path.home() / ".cache" / "bigmali"))


def shipped_path(spec: TableSpec) -> Path:
    """Path of the table shipped inside the package for ``spec`` (it may not exist)."""
    return Path(str(resources.files("bigmali") / "data" / f"{spec.key()}.ecsv"))


def load_table(spec: TableSpec = TableSpec()) -> MassFunctionTable:
    """The table for ``spec``: shipped with the package, else cached, else computed and cached."""
    for path in (shipped_path(spec), cache_dir() / f"{spec.key()}.ecsv"):
        if path.exists():
            return read_table(path)
    table = compute_table(spec)
    write_table(table, cache_dir() / f"{spec.key()}.ecsv")
    return table
