"""Halo catalogs: reading, writing and validating survey and mock catalogs.

A catalog has one row per halo (galaxy) and these columns:

===========  ========  =========================================================
column       required  meaning
===========  ========  =========================================================
z            yes       redshift, 0 <= z <= the mass prior's largest redshift
lum_obs      yes       observed luminosity, > 0 (on the 2017 catalogs' scale, see below)
ra           no        right ascension in degrees, [0, 360)
dec          no        declination in degrees, [-90, 90]
mass         no        true halo mass in Msun (mocks only)
lum          no        true luminosity (mocks only)
lum_obs_err  no        this halo's measurement error: the sd of ln L_obs, > 0
lum_lim      no        this halo's flux limit (same scale as lum_obs), > 0: used with
                       ``--flux-limit column`` (see :mod:`bigmali.selection`)
===========  ========  =========================================================

Other columns (ids, magnitudes, ...) are carried along untouched. Formats: FITS, ECSV and
CSV through astropy (CSV lines starting with ``#`` are comments), and the whitespace text
of the 2017 files, with two columns ``z lum_obs`` or five columns ``z lum_obs mass ra dec``
(suffix ``.txt`` or ``.dat``).

Column names are matched exactly. A name that appears twice, or a name that differs from a
catalog column only in case or surrounding spaces (``Z``, ``RA ``), is an error: astropy
would rename or keep one of them silently.

**Units.** FITS and ECSV columns may carry astropy units; they are converted on reading:

- ``ra``, ``dec``: any angle (``rad``, ``hourangle``, ``arcmin``) is converted to degrees;
  without a unit, degrees are assumed.
- ``mass``: any mass (``kg``, ``Msun``) is converted to Msun; units with ``h`` are refused.
- ``z``: dimensionless (or astropy's ``redshift``).
- ``lum_obs_err``: dimensionless (an sd of a natural logarithm); every model and method gives
  that halo ``sigma_k = sqrt(S^2 + lum_obs_err_k^2)`` instead of ``sigma_obs = 0.05``.
- ``lum_obs``, ``lum``: **the luminosity unit is the 2017 catalogs' own.** The relation's
  normalisation ``alpha1`` and its hyperprior (Reddick et al. 2013, applied in natural log
  as the 2017 code did) are calibrated on that scale, which has no stated physical unit.
  A column without a unit, or dimensionless, is taken as it is; a physical luminosity
  (``erg/s``, ``W``, ``Lsun``) is refused, because no conversion into the relation's scale
  is defined, and any other unit (a flux, a magnitude) is refused as not a luminosity.

Every problem raises a ``ValueError`` that names the column, the row (counting from 0)
and the value. No row is ever dropped.
"""

from __future__ import annotations

import csv
import hashlib
import warnings
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.table import Table

from bigmali.mass_function import Z_GRID_2017

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "DEFAULT_Z_MAX",
    "Catalog",
    "read_catalog",
    "write_catalog",
    "validate_catalog",
    "catalog_format",
    "catalog_fingerprint",
]

REQUIRED_COLUMNS = ("z", "lum_obs")
OPTIONAL_COLUMNS = ("ra", "dec", "mass", "lum", "lum_obs_err", "lum_lim")
TEXT_2017_COLUMNS = ("z", "lum_obs", "mass", "ra", "dec")
DEFAULT_Z_MAX = Z_GRID_2017[-1]
"""Largest redshift of the default (2017) mass prior."""

_FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".ecsv": "ecsv",
    ".csv": "csv",
    ".txt": "2017",
    ".dat": "2017",
}
_ASTROPY_FORMAT = {"fits": "fits", "ecsv": "ascii.ecsv", "csv": "ascii.csv"}


def catalog_format(path) -> str:
    """The format a path's suffix implies: ``fits``, ``ecsv``, ``csv`` or ``2017`` (text)."""
    name = str(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix not in _FORMATS:
        raise ValueError(
            f"catalog file {str(path)!r}: cannot tell its format from the suffix {suffix!r}; "
            f"use one of {', '.join(sorted(_FORMATS))}"
        )
    return _FORMATS[suffix]


def _first_bad(mask) -> tuple[int, int]:
    rows = np.flatnonzero(mask)
    return int(rows[0]), int(rows.size - 1)


def _more(n_more: int) -> str:
    return f" (and {n_more} more row{'s' if n_more != 1 else ''})" if n_more else ""


def _numeric_column(table: Table, name: str, where: str) -> np.ndarray:
    col = table[name]
    if col.ndim != 1:
        raise ValueError(f"{where}column {name!r} has shape {col.shape}; it must hold one number per row")
    mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else np.zeros(len(col), bool)
    if mask.any():
        row, more = _first_bad(mask)
        raise ValueError(f"{where}column {name!r}, row {row}: value is missing{_more(more)}")
    data = np.asarray(col)
    if data.dtype.kind not in "iuf":
        for row, value in enumerate(data):
            try:
                float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where}column {name!r}, row {row}: value {str(value)!r} is not a number") from None
        data = data.astype(np.float64)
    return np.asarray(data, dtype=np.float64)


_LUMINOSITY_REFUSED = (
    "bigmali's luminosities are on the 2017 catalogs' own scale (alpha1 and its hyperprior are "
    "calibrated on it), which has no stated physical unit, so no conversion from {unit} is defined; "
    "if the values are already on that scale, remove the unit"
)


def _catalog_unit(values: np.ndarray, unit, name: str, where: str) -> tuple[np.ndarray, u.UnitBase | None]:
    """``values`` in the catalog's unit for column ``name`` (see the module docstring), and
    the unit to label the column with; refuses what cannot be converted, with the reason."""
    if unit is None:
        return values, None
    text = unit.to_string() if hasattr(unit, "to_string") else str(unit)
    head = f"{where}column {name!r} has unit {text!r}"
    if isinstance(unit, u.UnrecognizedUnit):
        raise ValueError(f"{head}, which astropy does not recognise: give a known unit or none")
    if name in ("ra", "dec"):
        try:
            return (values * unit).to_value(u.deg), u.deg
        except u.UnitConversionError:
            raise ValueError(f"{head}, which is not an angle: give degrees (or any angle unit)") from None
    if name == "mass":
        if any(base.name == "littleh" for base in getattr(unit, "bases", [])):
            raise ValueError(f"{head}: masses per h need the cosmology's h; give them in Msun")
        try:
            return (values * unit).to_value(u.Msun), u.Msun
        except u.UnitConversionError:
            raise ValueError(f"{head}, which is not a mass: give Msun (or any mass unit)") from None
    if name == "z":
        from astropy.cosmology import units as cu

        try:
            return (values * unit).to_value(u.dimensionless_unscaled, equivalencies=cu.dimensionless_redshift()), None
        except u.UnitConversionError:
            raise ValueError(f"{head}: a redshift has no unit") from None
    if name == "lum_obs_err":
        if unit.is_equivalent(u.dimensionless_unscaled):
            return (values * unit).to_value(u.dimensionless_unscaled), None
        raise ValueError(f"{head}: it is the sd of ln L_obs, a number without a unit")
    # lum_obs and lum
    if unit.is_equivalent(u.dimensionless_unscaled):
        return (values * unit).to_value(u.dimensionless_unscaled), None
    if unit.is_equivalent(u.erg / u.s):
        raise ValueError(f"{head}: " + _LUMINOSITY_REFUSED.format(unit=repr(text)))
    raise ValueError(
        f"{head}, which is not a luminosity (a flux or a magnitude needs a distance and a band "
        "to become one); give luminosities on the 2017 catalogs' scale, without a unit"
    )


def _check_names(names, where: str) -> None:
    """Refuse duplicate names and names that differ from a catalog column only in case or spaces."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{where}column {name!r} appears twice (columns {seen[name] + 1} and {i + 1}); rename one of them"
            )
        seen[name] = i
    for wanted in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        lookalikes = [n for n in names if n != wanted and n.strip().lower() == wanted]
        if lookalikes:
            other = lookalikes[0]
            if wanted in seen:
                raise ValueError(
                    f"{where}columns {wanted!r} and {other!r} differ only in case or spaces: it is "
                    f"ambiguous which one is the catalog's {wanted!r}; rename or remove {other!r}"
                )
            raise ValueError(
                f"{where}column {other!r} looks like the catalog column {wanted!r}, but names are matched "
                f"exactly: rename it to {wanted!r} (or to another name if it is something else)"
            )


def validate_catalog(table: Table, *, z_max: float | None = DEFAULT_Z_MAX, source: str | None = None) -> Table:
    """Check a table against the catalog rules and return it with float64 science columns.

    Raises ``ValueError`` naming column, row and value for: an empty catalog, missing,
    duplicate or ambiguous columns, values that are missing, non-numeric or non-finite,
    ``lum_obs <= 0``, ``z < 0``, ``z > z_max`` (pass ``z_max=None`` to skip that check),
    non-positive true masses or luminosities, coordinates outside their ranges, and units
    that cannot be converted to the catalog's (see the module docstring; angles become
    degrees, masses Msun).
    """
    where = f"catalog {source}: " if source else ""
    _check_names(table.colnames, where)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.colnames]
    if missing:
        found = ", ".join(table.colnames) or "none"
        raise ValueError(f"{where}missing column {missing[0]!r} (required: z, lum_obs; found: {found})")
    if len(table) == 0:
        raise ValueError(f"{where}the catalog is empty (no rows)")
    if ("ra" in table.colnames) != ("dec" in table.colnames):
        present, absent = ("ra", "dec") if "ra" in table.colnames else ("dec", "ra")
        raise ValueError(f"{where}column {present!r} is present but {absent!r} is missing; give both or neither")
    out = table.copy(copy_data=True)
    for name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
        if name not in out.colnames:
            continue
        values = _numeric_column(out, name, where)
        values, unit = _catalog_unit(values, getattr(out[name], "unit", None), name, where)
        bad = ~np.isfinite(values)
        if bad.any():
            row, more = _first_bad(bad)
            raise ValueError(
                f"{where}column {name!r}, row {row}: value {float(values[row])!r} is not finite{_more(more)}"
            )
        checks = {
            "lum_obs": (values <= 0, "must be > 0 (luminosities are positive)"),
            "lum": (values <= 0, "must be > 0 (luminosities are positive)"),
            "lum_lim": (values <= 0, "must be > 0 (luminosities are positive)"),
            "mass": (values <= 0, "must be > 0 (masses are positive)"),
            "lum_obs_err": (values <= 0, "must be > 0 (it is the sd of ln L_obs)"),
            "ra": ((values < 0) | (values >= 360), "must lie in [0, 360) degrees"),
            "dec": ((values < -90) | (values > 90), "must lie in [-90, 90] degrees"),
        }
        if name == "z":
            checks["z"] = (values < 0, "must be >= 0")
        if name in checks:
            bad, rule = checks[name]
            if bad.any():
                row, more = _first_bad(bad)
                raise ValueError(f"{where}column {name!r}, row {row}: value {float(values[row])!r} {rule}{_more(more)}")
        if name == "z" and z_max is not None:
            bad = values > z_max
            if bad.any():
                row, more = _first_bad(bad)
                raise ValueError(
                    f"{where}column 'z', row {row}: value {float(values[row])!r} is beyond the mass prior's "
                    f"redshift range [0, {z_max:g}]{_more(more)}"
                )
        out.replace_column(name, values)
        if unit is not None:
            out[name].unit = unit
    return out


def catalog_fingerprint(z, lum_obs, lum_obs_err=None) -> str:
    """SHA-256 of the ``z`` and ``lum_obs`` columns, and ``lum_obs_err`` where the catalog
    has it (float64, little-endian, row order): what a run records to know its catalog again."""
    digest = hashlib.sha256()
    for values in (z, lum_obs) if lum_obs_err is None else (z, lum_obs, lum_obs_err):
        array = np.ascontiguousarray(np.asarray(values), dtype="<f8")
        digest.update(len(array).to_bytes(8, "little"))
        digest.update(array.tobytes())
    return digest.hexdigest()


class Catalog:
    """A validated halo catalog: an astropy ``Table`` plus typed access to its columns.

    Build one with :func:`read_catalog`, :meth:`Catalog.from_arrays` or from a Table.
    ``catalog.table`` keeps every column and the metadata (seed, hyperparameters, ...).
    """

    def __init__(self, table: Table, *, z_max: float | None = DEFAULT_Z_MAX, source: str | None = None):
        self.table = validate_catalog(table, z_max=z_max, source=source)

    @classmethod
    def from_arrays(
        cls,
        *,
        z,
        lum_obs,
        ra=None,
        dec=None,
        mass=None,
        lum=None,
        lum_obs_err=None,
        lum_lim=None,
        meta=None,
        z_max: float | None = DEFAULT_Z_MAX,
        **extra,
    ) -> Catalog:
        """Build a catalog from arrays; columns of different lengths raise ``ValueError``."""
        columns = {
            "z": z,
            "lum_obs": lum_obs,
            "ra": ra,
            "dec": dec,
            "mass": mass,
            "lum": lum,
            "lum_obs_err": lum_obs_err,
            "lum_lim": lum_lim,
            **extra,
        }
        # Quantities keep their unit, so that validation converts or refuses it.
        columns = {
            k: np.atleast_1d(v) if isinstance(v, u.Quantity) else np.atleast_1d(np.asarray(v))
            for k, v in columns.items()
            if v is not None
        }
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            longest = max(lengths, key=lengths.get)
            odd = next(k for k, n in lengths.items() if n != lengths[longest])
            raise ValueError(
                f"columns have different lengths: column {odd!r} has {lengths[odd]} rows but column "
                f"{longest!r} has {lengths[longest]}"
            )
        return cls(Table(columns, meta=dict(meta or {})), z_max=z_max)

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} halos, columns: {', '.join(self.table.colnames)})"

    def _column(self, name):
        return np.asarray(self.table[name], dtype=np.float64) if name in self.table.colnames else None

    z = property(lambda self: self._column("z"), doc="Redshifts.")
    lum_obs = property(lambda self: self._column("lum_obs"), doc="Observed luminosities.")
    ra = property(lambda self: self._column("ra"), doc="Right ascensions in degrees, or None.")
    dec = property(lambda self: self._column("dec"), doc="Declinations in degrees, or None.")
    mass = property(lambda self: self._column("mass"), doc="True masses in Msun (mocks), or None.")
    lum = property(lambda self: self._column("lum"), doc="True luminosities (mocks), or None.")
    lum_obs_err = property(
        lambda self: self._column("lum_obs_err"), doc="Per-halo sd of ln L_obs (measurement errors), or None."
    )
    lum_lim = property(lambda self: self._column("lum_lim"), doc="Per-halo flux limits, or None.")

    @property
    def meta(self) -> dict:
        return self.table.meta

    def fingerprint(self) -> str:
        """SHA-256 of the ``z``, ``lum_obs`` (and ``lum_obs_err``) columns (see :func:`catalog_fingerprint`)."""
        return catalog_fingerprint(self.z, self.lum_obs, self.lum_obs_err)

    def summary(self) -> str:
        """A few lines: the count, the redshift and luminosity ranges, the optional columns."""
        z, lum = self.z, self.lum_obs
        extra = [c for c in OPTIONAL_COLUMNS if c in self.table.colnames]
        lines = [
            f"halos:    {len(self)}",
            f"z:        {z.min():.6g} .. {z.max():.6g}",
            f"lum_obs:  {lum.min():.6g} .. {lum.max():.6g}",
            f"optional: {', '.join(extra) if extra else 'none'}",
        ]
        return "\n".join(lines)


def _read_text_2017(path: Path) -> Table:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on empty input; we raise below
            data = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        _diagnose_text_2017(path)
        raise ValueError(f"cannot read catalog {str(path)!r}: {exc}") from None
    if data.size == 0:
        raise ValueError(f"catalog {str(path)!r}: the catalog is empty (no rows)")
    ncol = data.shape[1]
    if ncol not in (2, 5):
        raise ValueError(
            f"catalog {str(path)!r}: rows have {ncol} values; 2017 text catalogs have 2 (z lum_obs) or "
            "5 (z lum_obs mass ra dec)"
        )
    return Table({name: data[:, i] for i, name in enumerate(TEXT_2017_COLUMNS[:ncol])})


def _diagnose_text_2017(path: Path) -> None:
    """Find the first malformed line of a text catalog and raise its clear error."""
    expected = None
    row = -1
    with open(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            row += 1
            fields = text.split()
            for i, value in enumerate(fields):
                try:
                    float(value)
                except ValueError:
                    name = TEXT_2017_COLUMNS[i] if i < 5 else f"#{i + 1}"
                    raise ValueError(
                        f"catalog {str(path)!r}: column {name!r}, row {row} (line {lineno}): value {value!r} is "
                        "not a number (2017 text catalogs have no header; use .ecsv or .csv for named columns)"
                    ) from None
            if expected is None:
                expected = len(fields)
            elif len(fields) != expected:
                raise ValueError(
                    f"catalog {str(path)!r}: row {row} (line {lineno}) has {len(fields)} values but the rows "
                    f"before it have {expected}: columns of different lengths"
                )


def _header_names(path: Path, fmt: str) -> list[str] | None:
    """The column names exactly as the file spells them, or None when they cannot be read
    here (astropy then reports the problem)."""
    try:
        if fmt == "fits":
            from astropy.io import fits

            with fits.open(path) as hdus:
                table = next((h for h in hdus[1:] if isinstance(h, (fits.BinTableHDU, fits.TableHDU))), None)
                if table is None:
                    return None
                return [table.header.get(f"TTYPE{i}", "") for i in range(1, int(table.header.get("TFIELDS", 0)) + 1)]
        delimiter = "," if fmt == "csv" else " "  # ECSV's default is a space; its YAML header may say otherwise
        with open(path, newline="") as handle:
            for line in handle:
                if line.startswith("#"):
                    key, _, value = line.lstrip("# ").partition(":")
                    if fmt == "ecsv" and key.strip() == "delimiter":
                        delimiter = value.strip().strip("'\"") or " "
                    continue
                if line.strip():
                    return next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter, skipinitialspace=True))
    except (OSError, UnicodeDecodeError, ValueError, StopIteration):
        return None
    return None


def read_catalog(path, format: str | None = None, *, z_max: float | None = DEFAULT_Z_MAX) -> Catalog:
    """Read and validate a catalog file.

    Args:
        path: FITS, ECSV, CSV, or 2017 whitespace text (.txt/.dat).
        format: ``fits``, ``ecsv``, ``csv`` or ``2017``; by default from the suffix.
        z_max: largest allowed redshift, normally the mass prior's (``None`` skips the check).
    """
    path = Path(path)
    source = repr(str(path))
    if path.is_dir():
        raise ValueError(
            f"cannot read catalog {source}: it is a directory; give a catalog file (.fits, .ecsv, .csv, .txt)"
        )
    fmt = format or catalog_format(path)
    if not path.is_file():
        raise ValueError(f"cannot read catalog {source}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"catalog {source}: the file is empty (no rows)")
    if fmt == "2017":
        try:
            table = _read_text_2017(path)
        except UnicodeDecodeError:
            raise ValueError(f"cannot read catalog {source}: it is not a text file") from None
    elif fmt in _ASTROPY_FORMAT:
        names = _header_names(path, fmt)
        if names is not None:  # before astropy, which renames a repeated name to NAME_1
            _check_names(names, f"catalog {source}: ")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                options = {"comment": "#"} if fmt == "csv" else {}
                table = Table.read(path, format=_ASTROPY_FORMAT[fmt], **options)
        except Exception as exc:  # astropy raises many kinds; all mean an unreadable file here
            raise ValueError(f"cannot read catalog {source} as {fmt}: {exc}") from None
    else:
        raise ValueError(f"catalog format {fmt!r}: choose one of fits, ecsv, csv, 2017")
    return Catalog(table, z_max=z_max, source=source)


def write_catalog(catalog: Catalog, path, format: str | None = None, *, overwrite: bool = True) -> Path:
    """Write a catalog. FITS, ECSV and CSV keep every column; values round-trip exactly.

    The file is written atomically (see :mod:`bigmali.files`): an existing file is replaced
    only once the new one is complete, and only if ``overwrite``. The 2017 text format holds
    only ``z lum_obs`` or ``z lum_obs mass ra dec``; other columns are not written and a
    warning names them.
    """
    from bigmali.files import atomic_path

    path = Path(path)
    fmt = format or catalog_format(path)
    table = catalog.table
    if fmt not in _ASTROPY_FORMAT and fmt != "2017":
        raise ValueError(f"catalog format {fmt!r}: choose one of fits, ecsv, csv, 2017")
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} exists")
    if fmt == "2017":
        has_five = all(c in table.colnames for c in ("mass", "ra", "dec"))
        names = TEXT_2017_COLUMNS if has_five else REQUIRED_COLUMNS
        left_out = [c for c in table.colnames if c not in names]
        if left_out:
            warnings.warn(
                f"the 2017 text format holds only {' '.join(names)}; not written to {str(path)!r}: "
                f"{', '.join(left_out)} (use .fits or .ecsv to keep them)",
                stacklevel=2,
            )
        data = np.column_stack([np.asarray(table[c], dtype=np.float64) for c in names])
        with atomic_path(path) as tmp:
            np.savetxt(tmp, data, fmt="%.17g", header=" ".join(names))
    else:
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")  # FITS HIERARCH cards for long metadata keys
            table.write(tmp, format=_ASTROPY_FORMAT[fmt], overwrite=True)
    return path
