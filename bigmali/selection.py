"""Survey selection: the flux limit below which a survey does not detect a halo.

A galaxy survey detects a halo only when its observed luminosity exceeds a limit
``L_lim(z)`` that rises with redshift. A catalog cut that way holds only the bright tail at
high z, and a fit that ignores the cut biases the slope and the evolution (Malmquist bias).
Each detected halo's likelihood is then conditioned on its detection (see
:mod:`bigmali.likelihood.quadrature`):

.. math:: P(L_{obs,k} \\mid \\theta, z_k, \\mathrm{detected}) =
    \\frac{P(L_{obs,k} \\mid \\theta, z_k)}{P(L_{obs} > L_{lim}(z_k) \\mid \\theta, z_k)}.

A :class:`FluxLimit` is one of

* a constant (``--flux-limit VALUE``);
* a table of ``z`` and ``lum_lim`` (``--flux-limit FILE``, any table astropy reads, with those
  two columns), interpolated linearly in ``ln L_lim`` between its rows; a halo outside the
  table's redshifts is an error, not an extrapolation;
* the catalog's own per-halo column ``lum_lim`` (``--flux-limit column``).

Limits are in the catalog's luminosity unit. A catalog records its limit in its metadata
(key ``FLUXLIM``, a JSON string), so that a fit finds it again.

That is the truncated likelihood. The extended likelihood (:mod:`bigmali.likelihood.extended`)
also counts the detected halos, and needs the survey's window: a :class:`Survey` (sky area
and redshift range), which a lightcone mock records under ``SURVEY``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "FluxLimit",
    "Survey",
    "META_KEY",
    "LIKELIHOODS",
    "check_detected",
    "check_in_survey",
    "resolve_flux_limit",
    "resolve_survey",
]

META_KEY = "FLUXLIM"
SURVEY_KEY = "SURVEY"
KINDS = ("constant", "table", "column")
LIKELIHOODS = ("truncated", "extended")
"""How a flux-limited catalog enters the likelihood (``--selection``): each halo conditioned
on its detection, or the extended likelihood with the number of detected halos (Poisson)."""


class FluxLimit(NamedTuple):
    """A flux limit ``L_lim(z)``: build one with :meth:`constant`, :meth:`table`,
    :meth:`column` or :meth:`parse`.

    Attributes:
        kind: ``"constant"``, ``"table"`` or ``"column"``.
        value: the constant limit.
        z, lum: the table's rows (z increasing).
        source: where the table was read from (recorded, not used).
    """

    kind: str
    value: float | None = None
    z: tuple = ()
    lum: tuple = ()
    source: str | None = None

    @classmethod
    def constant(cls, value: float) -> FluxLimit:
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"flux limit {value!r}: must be a finite luminosity > 0")
        return cls("constant", value=value)

    @classmethod
    def table(cls, z, lum, source: str | None = None) -> FluxLimit:
        z, lum = np.asarray(z, dtype=np.float64), np.asarray(lum, dtype=np.float64)
        where = f" in {source}" if source else ""
        if z.ndim != 1 or z.shape != lum.shape or z.size < 2:
            raise ValueError(f"flux-limit table{where}: needs at least two rows of z and lum_lim")
        for name, values in (("z", z), ("lum_lim", lum)):
            bad = np.flatnonzero(~np.isfinite(values) | ((values <= 0) if name == "lum_lim" else (values < 0)))
            if bad.size:
                rule = "> 0" if name == "lum_lim" else ">= 0"
                raise ValueError(
                    f"flux-limit table{where}, column {name!r}, row {bad[0]}: value {float(values[bad[0]])!r} "
                    f"must be finite and {rule}"
                )
        step = np.flatnonzero(np.diff(z) <= 0)
        if step.size:
            raise ValueError(
                f"flux-limit table{where}, column 'z', row {step[0] + 1}: value {float(z[step[0] + 1])!r} does not "
                f"increase from {float(z[step[0]])!r}"
            )
        return cls("table", z=tuple(z.tolist()), lum=tuple(lum.tolist()), source=source)

    @classmethod
    def column(cls) -> FluxLimit:
        return cls("column")

    @classmethod
    def parse(cls, text: str) -> FluxLimit:
        """``"column"``, a number, or the path of a table with columns ``z`` and ``lum_lim``."""
        text = str(text).strip()
        if text == "column":
            return cls.column()
        try:
            value = float(text)
        except ValueError:
            return cls._read_table(Path(text))
        return cls.constant(value)

    @classmethod
    def _read_table(cls, path: Path) -> FluxLimit:
        from astropy.table import Table

        if not path.exists():
            raise ValueError(f"flux limit {str(path)!r}: neither a number, 'column', nor an existing table file")
        fmt = "ascii" if path.suffix.lower() in (".txt", ".dat", ".csv") else None
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
        missing = [c for c in ("z", "lum_lim") if c not in table.colnames]
        if missing:
            raise ValueError(
                f"flux-limit table {str(path)!r}: no column {missing[0]!r} (has {', '.join(table.colnames)})"
            )
        return cls.table(np.asarray(table["z"]), np.asarray(table["lum_lim"]), source=str(path))

    def ln_limit(self, catalog) -> np.ndarray:
        """``ln L_lim`` at each halo of ``catalog``; a halo the limit does not cover is an error."""
        z = np.asarray(catalog.z, dtype=np.float64)
        if self.kind == "column":
            if catalog.lum_lim is None:
                raise ValueError("flux limit 'column': the catalog has no column 'lum_lim'")
            return np.log(np.asarray(catalog.lum_lim, dtype=np.float64))
        return self.ln_limit_at(z)

    def ln_limit_at(self, z) -> np.ndarray:
        """``ln L_lim(z)`` of a constant or a table (a redshift outside the table is an error)."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        if self.kind == "constant":
            return np.full(z.size, math.log(self.value))
        if self.kind == "column":
            raise ValueError("flux limit 'column' is per halo, not a function of z")
        z_tab, ln_tab = np.asarray(self.z), np.log(np.asarray(self.lum))
        outside = np.flatnonzero((z < z_tab[0]) | (z > z_tab[-1]))
        if outside.size:
            row = int(outside[0])
            raise ValueError(
                f"column 'z', row {row}: value {float(z[row])!r} is outside the flux-limit table's redshifts "
                f"[{z_tab[0]:g}, {z_tab[-1]:g}]{f' ({self.source})' if self.source else ''}; "
                f"{outside.size} halo(s) are not covered"
            )
        return np.interp(z, z_tab, ln_tab)

    def to_meta(self) -> str:
        """The limit as the JSON string a catalog's metadata records under :data:`META_KEY`."""
        return json.dumps({k: v for k, v in self._asdict().items() if v not in (None, ())})

    @classmethod
    def from_meta(cls, meta) -> FluxLimit | None:
        """The limit a catalog's metadata records, or None."""
        if META_KEY not in meta:
            return None
        fields = json.loads(meta[META_KEY])
        if fields.get("kind") not in KINDS:
            raise ValueError(f"catalog metadata {META_KEY}: unknown flux-limit kind {fields.get('kind')!r}")
        if fields["kind"] == "constant":
            return cls.constant(fields["value"])
        if fields["kind"] == "table":
            return cls.table(fields["z"], fields["lum"], fields.get("source"))
        return cls.column()

    def describe(self) -> str:
        if self.kind == "constant":
            return f"L_lim = {self.value:g} at every z"
        if self.kind == "table":
            return f"L_lim(z) from a table of {len(self.z)} rows, z in [{self.z[0]:g}, {self.z[-1]:g}]" + (
                f" ({self.source})" if self.source else ""
            )
        return "L_lim per halo, the catalog's column lum_lim"


def check_detected(catalog, ln_lim: np.ndarray) -> None:
    """Refuse a catalog with a halo below its own flux limit: the selection says it cannot be there."""
    ln_lum = np.log(np.asarray(catalog.lum_obs, dtype=np.float64))
    below = np.flatnonzero(ln_lum < ln_lim)
    if below.size:
        row = int(below[0])
        raise ValueError(
            f"column 'lum_obs', row {row}: value {float(catalog.lum_obs[row])!r} is below its flux limit "
            f"{math.exp(ln_lim[row]):.6g}, so a survey with that limit would not have detected it "
            f"({below.size} halo(s) below their limits): check the limit, or cut the catalog to it"
        )


def resolve_flux_limit(flux_limit, catalog) -> tuple[FluxLimit | None, str]:
    """The limit a fit uses, and where it came from: ``flux_limit`` if given (a
    :class:`FluxLimit`, or text for :meth:`FluxLimit.parse`; ``"none"`` for a complete
    catalog), else the one the catalog's metadata records, else none."""
    if isinstance(flux_limit, str) and flux_limit.strip() == "none":
        return None, "none (given): the catalog is taken as complete"
    if flux_limit is not None:
        limit = flux_limit if isinstance(flux_limit, FluxLimit) else FluxLimit.parse(flux_limit)
        return limit, f"{limit.describe()} (given)"
    limit = FluxLimit.from_meta(catalog.meta)
    if limit is None:
        return None, "none: the catalog records no flux limit and none was given"
    return limit, f"{limit.describe()} (recorded in the catalog's metadata)"


class Survey(NamedTuple):
    """The sky and redshift window a survey covers, for the extended likelihood: the parent
    halos it holds are ``expected_dndz`` (:func:`bigmali.mass_prior.expected_dndz`) over
    ``[z_min, z_max]`` in ``solid_angle`` steradians; ``z_max`` None is the prior's last table."""

    solid_angle: float
    z_min: float = 0.0
    z_max: float | None = None

    @classmethod
    def from_area(cls, area_deg2: float, z_min: float = 0.0, z_max: float | None = None) -> Survey:
        area = float(area_deg2)
        if not (math.isfinite(area) and 0 < area <= 41_252.97):
            raise ValueError(f"survey area {area_deg2!r} deg^2: must be positive and at most the whole sky")
        if not (0 <= z_min and (z_max is None or z_min < z_max)):
            raise ValueError(f"survey redshifts [{z_min!r}, {z_max!r}]: need 0 <= z_min < z_max")
        return cls(area * (math.pi / 180.0) ** 2, float(z_min), None if z_max is None else float(z_max))

    @classmethod
    def from_meta(cls, meta) -> Survey | None:
        """The window a catalog's metadata records (``SURVEY``: ``bigmali simulate`` records
        it for a lightcone with a Poisson number of halos), or None."""
        return cls.from_json(meta[SURVEY_KEY]) if SURVEY_KEY in meta else None

    def describe(self) -> str:
        top = "the prior's last table" if self.z_max is None else f"{self.z_max:g}"
        return f"{self.solid_angle * (180.0 / math.pi) ** 2:.6g} deg^2, z from {self.z_min:g} to {top}"

    def to_json(self) -> str:
        return json.dumps(self._asdict())

    @classmethod
    def from_json(cls, text: str) -> Survey:
        fields = json.loads(text)
        return cls(float(fields["solid_angle"]), float(fields.get("z_min", 0.0)), fields.get("z_max"))


def check_in_survey(catalog, survey: Survey) -> None:
    """Refuse a halo outside the survey's redshift window (the expected count covers only it)."""
    z = np.asarray(catalog.z, dtype=np.float64)
    top = np.inf if survey.z_max is None else survey.z_max
    outside = np.flatnonzero((z < survey.z_min) | (z > top))
    if outside.size:
        row = int(outside[0])
        raise ValueError(
            f"column 'z', row {row}: value {float(z[row])!r} is outside the survey's redshifts "
            f"[{survey.z_min:g}, {top:g}] that the extended likelihood counts halos in ({outside.size} halo(s))"
        )


def resolve_survey(survey, catalog) -> tuple[Survey, str]:
    """The survey window the extended likelihood uses: ``survey`` if given, else the one a
    lightcone mock's metadata implies; refused when neither is known."""
    if survey is not None:
        return survey, f"{survey.describe()} (given)"
    survey = Survey.from_meta(catalog.meta)
    if survey is None:
        raise ValueError(
            "the extended likelihood needs the survey's area and redshift range (--survey-area DEG2, "
            "--survey-z LO,HI), and the catalog's metadata records none (a lightcone mock drawn with a "
            "Poisson number of halos records its field)"
        )
    return survey, f"{survey.describe()} (recorded in the catalog's metadata)"
