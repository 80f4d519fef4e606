"""Halo catalogs: reading, writing and validating survey and mock catalogs.

A catalog has one row per halo (galaxy) and these columns:

=========  ========  ===========================================================
column     required  meaning
=========  ========  ===========================================================
z          yes       redshift, 0 <= z <= the mass prior's largest redshift
lum_obs    yes       observed luminosity, > 0 (units of the 2017 catalogs)
ra         no        right ascension in degrees, [0, 360)
dec        no        declination in degrees, [-90, 90]
mass       no        true halo mass in Msun (mocks only)
lum        no        true luminosity (mocks only)
=========  ========  ===========================================================

Other columns (ids, magnitudes, ...) are carried along untouched. Formats: FITS, ECSV and
CSV through astropy, and the whitespace text of the 2017 files, with two columns
``z lum_obs`` or five columns ``z lum_obs mass ra dec`` (suffix ``.txt`` or ``.dat``).

Every problem raises a ``ValueError`` that names the column, the row (counting from 0)
and the value. No row is ever dropped.
"""

from __future__ import annotations

import warnings
from pathlib import Path

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
]

REQUIRED_COLUMNS = ("z", "lum_obs")
OPTIONAL_COLUMNS = ("ra", "dec", "mass", "lum")
TEXT_2017_COLUMNS = ("z", "lum_obs", "mass", "ra", "dec")
DEFAULT_Z_MAX = Z_GRID_2017[-1]
"""Largest redshift of the default (2017) mass prior."""

_FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".ecsv": "ecsv", ".csv": "csv", ".txt": "2017", ".dat": "2017"}
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


def validate_catalog(table: Table, *, z_max: float | None = DEFAULT_Z_MAX, source: str | None = None) -> Table:
    """Check a table against the catalog rules and return it with float64 science columns.

    Raises ``ValueError`` naming column, row and value for: an empty catalog, missing
    columns, values that are missing, non-numeric or non-finite, ``lum_obs <= 0``,
    ``z < 0``, ``z > z_max`` (pass ``z_max=None`` to skip that check), non-positive true
    masses or luminosities, and coordinates outside their ranges.
    """
    where = f"catalog {source}: " if source else ""
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
        bad = ~np.isfinite(values)
        if bad.any():
            row, more = _first_bad(bad)
            raise ValueError(f"{where}column {name!r}, row {row}: value {float(values[row])!r} is not finite{_more(more)}")
        checks = {
            "lum_obs": (values <= 0, "must be > 0 (luminosities are positive)"),
            "lum": (values <= 0, "must be > 0 (luminosities are positive)"),
            "mass": (values <= 0, "must be > 0 (masses are positive)"),
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
        unit = out[name].unit if hasattr(out[name], "unit") else None
        out.replace_column(name, values)
        if unit is not None:
            out[name].unit = unit
    return out


class Catalog:
    """A validated halo catalog: an astropy ``Table`` plus typed access to its columns.

    Build one with :func:`read_catalog`, :meth:`Catalog.from_arrays` or from a Table.
    ``catalog.table`` keeps every column and the metadata (seed, hyperparameters, ...).
    """

    def __init__(self, table: Table, *, z_max: float | None = DEFAULT_Z_MAX, source: str | None = None):
        self.table = validate_catalog(table, z_max=z_max, source=source)

    @classmethod
    def from_arrays(cls, *, z, lum_obs, ra=None, dec=None, mass=None, lum=None, meta=None,
                    z_max: float | None = DEFAULT_Z_MAX, **extra) -> "Catalog":
        """Build a catalog from arrays; columns of different lengths raise ``ValueError``."""
        columns = {"z": z, "lum_obs": lum_obs, "ra": ra, "dec": dec, "mass": mass, "lum": lum, **extra}
        columns = {k: np.atleast_1d(np.asarray(v)) for k, v in columns.items() if v is not None}
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

    @property
    def meta(self) -> dict:
        return self.table.meta

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


def read_catalog(path, format: str | None = None, *, z_max: float | None = DEFAULT_Z_MAX) -> Catalog:
    """Read and validate a catalog file.

    Args:
        path: FITS, ECSV, CSV, or 2017 whitespace text (.txt/.dat).
        format: ``fits``, ``ecsv``, ``csv`` or ``2017``; by default from the suffix.
        z_max: largest allowed redshift, normally the mass prior's (``None`` skips the check).
    """
    path = Path(path)
    fmt = format or catalog_format(path)
    source = repr(str(path))
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
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = Table.read(path, format=_ASTROPY_FORMAT[fmt])
        except Exception as exc:  # astropy raises many kinds; all mean an unreadable file here
            raise ValueError(f"cannot read catalog {source} as {fmt}: {exc}") from None
    else:
        raise ValueError(f"catalog format {fmt!r}: choose one of fits, ecsv, csv, 2017")
    return Catalog(table, z_max=z_max, source=source)


def write_catalog(catalog: Catalog, path, format: str | None = None, *, overwrite: bool = True) -> Path:
    """Write a catalog. FITS, ECSV and CSV keep every column; values round-trip exactly.

    The 2017 text format holds only ``z lum_obs`` or ``z lum_obs mass ra dec``; other
    columns are not written and a warning names them.
    """
    path = Path(path)
    fmt = format or catalog_format(path)
    table = catalog.table
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
        if path.exists() and not overwrite:
            raise ValueError(f"{str(path)!r} exists")
        data = np.column_stack([np.asarray(table[c], dtype=np.float64) for c in names])
        np.savetxt(path, data, fmt="%.17g", header=" ".join(names))
    elif fmt in _ASTROPY_FORMAT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FITS HIERARCH cards for long metadata keys
            table.write(path, format=_ASTROPY_FORMAT[fmt], overwrite=overwrite)
    else:
        raise ValueError(f"catalog format {fmt!r}: choose one of fits, ecsv, csv, 2017")
    return path
