"""Regenerate the mass-function table that ships with bigmali (the 2017 Tinker10/WMAP5 one).

Usage: python scripts/make_default_prior_table.py
It runs hmf at the 2017 settings and writes bigmali/data/<key>.ecsv; tests/test_mass_function.py
regenerates it the same way and checks the shipped file against it.
"""

from bigmali import mass_function


def main() -> None:
    spec = mass_function.TableSpec()
    table = mass_function.compute_table(spec)
    path = mass_function.shipped_path(spec)
    mass_function.write_table(table, path)
    print(
        f"wrote {path} ({table.dndm.shape[0]} redshifts x {table.dndm.shape[1]} masses, hmf {table.meta['hmf_version']})"
    )


if __name__ == "__main__":
    main()
