"""Per-halo mass posteriors, the fast conditional sampler, and mass maps with a WCS."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import bigmali
from bigmali import cli
from bigmali.massmap import PixelGrid, check_z_edges, mass_posterior, massmap, sampled_mass_posterior


@pytest.fixture(scope="module")
def mock(small_mock):
    return small_mock


@pytest.fixture(scope="module")
def run(mock, prior):
    return bigmali.fit(
        mock, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=0, log_likelihood=0, seed=2
    )


def test_pixel_grid_agrees_with_its_wcs(mock):
    grid = PixelGrid.covering(mock.ra, mock.dec, n_pixels=16)
    idx = grid.pixel_index(mock.ra, mock.dec)
    assert np.all(idx >= 0)  # every halo lands on the grid
    px, py = grid.wcs().world_to_pixel_values(mock.ra, mock.dec)
    col, row = np.floor(px + 0.5).astype(int), np.floor(py + 0.5).astype(int)
    # Pixel centres are integers in WCS pixel coordinates: the same pixel, bar round-off at edges.
    assert np.mean(idx == row * 16 + col) > 0.999


def test_mass_posterior_coverage_and_maps(mock, prior, run, tmp_path):
    summary = massmap(
        run, mock, prior, tmp_path, n_draws=200, n_pixels=8, z_edges=[0, 1.5, 3.5], keep=200, progress=False
    )
    # 2,000 halos: the binomial sd of a coverage is ~1 point; the hyperparameters' shared
    # error adds correlation. Bounds: 4 points for 68%, 2.5 for 95%.
    assert abs(summary["coverage_68"] - 0.68) < 0.04
    assert abs(summary["coverage_95"] - 0.95) < 0.025
    assert summary["rmse_log10M"] < summary["rmse_log10M_naive"] < summary["rmse_log10M_prior_only"]
    assert summary["pixel_corr"] > 0.8
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    with fits.open(tmp_path / "massmap_mean.fits") as hdus:
        assert len(hdus) == 3 and hdus[1].data.shape == (8, 8)
        assert WCS(hdus[1].header).wcs.ctype[0] == "RA---TAN"
        mean_total = sum(float(h.data.sum()) for h in hdus[1:])
    with fits.open(tmp_path / "massmap_truth.fits") as hdus:
        assert sum(float(h.data.sum()) for h in hdus[1:]) == pytest.approx(float(mock.mass.sum()), rel=1e-5)
    # Every halo is counted once per realisation: the mean map's total is the mean total mass.
    from astropy.table import Table

    table = Table.read(tmp_path / "halo_masses.fits")
    realisations = np.exp(np.asarray(table["ln_mass_realisations"], dtype=np.float64))
    assert realisations.shape == (1500, 200)
    assert mean_total == pytest.approx(realisations.sum(axis=0).mean(), rel=1e-5)
    assert (tmp_path / "massmap.png").stat().st_size > 20_000


def test_mass_posterior_tracks_each_halo(mock, prior, run):
    post, maps, kept = mass_posterior(run, mock, prior, n_draws=100, n_pixels=4, keep=5, progress=False)
    assert kept.shape == (5, 1500) and maps.mean.shape == (1, 4, 4)
    assert np.all(post.p2_5 <= post.p16) and np.all(post.p16 <= post.median) and np.all(post.median <= post.p84)
    assert np.all(post.p84 <= post.p97_5)
    # The lognormal fit is close for most halos (their posteriors are nearly lognormal away
    # from the prior's cliff at the lowest mass): median error below 0.1 dex.
    assert np.median(post.lognormal_error) < 0.1


def test_masses_kept_by_a_run_give_the_same_posteriors(mock, prior, run):
    """The run's own kept masses (what a latent model samples directly) against the
    realisation pipeline: 40 draws each, so medians agree to Monte Carlo error."""
    kept_run = bigmali.fit(
        mock, prior=prior, chains=2, warmup=200, draws=200, progress=False, mass_draws=40, log_likelihood=0, seed=5
    )
    direct = sampled_mass_posterior(kept_run)
    post, _, _ = mass_posterior(run, mock, prior, n_draws=200, keep=0, progress=False)
    # Per-halo posterior sd is ~0.15 dex: the median of 40 draws wanders ~0.03 dex.
    assert np.median(np.abs(direct.median - post.median)) < 0.03
    assert np.mean((np.log10(mock.mass) >= direct.p16) & (np.log10(mock.mass) <= direct.p84)) == pytest.approx(
        0.68, abs=0.06
    )
    with pytest.raises(ValueError, match="kept no per-halo masses"):
        sampled_mass_posterior(run)


def test_field_grid():
    grid = PixelGrid.field(10.0, -5.0, 0.5, 10)
    assert grid.pixel_index([10.0], [-5.0])[0] == 5 * 10 + 5
    assert grid.pixel_index([11.0], [-5.0])[0] == -1  # off the field
    for ra, dec, width in ((0.0, 0.0, -1.0), (0.0, 0.0, 181.0), (0.0, 91.0, 1.0), (float("nan"), 0.0, 1.0)):
        with pytest.raises(ValueError, match=r"need a width in \(0, 180\] degrees"):
            PixelGrid.field(ra, dec, width)


def test_z_edges_are_checked():
    assert check_z_edges([0, 1.5, 3.5]).tolist() == [0.0, 1.5, 3.5]
    for bad in ([0.5], [1.0, 0.5], [-0.1, 1.0], [0.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="at least two increasing redshift edges >= 0"):
            check_z_edges(bad)


def test_cli_massmap_and_its_errors(mock, run, tmp_path, capsys):
    cat_path = tmp_path / "mock.fits"
    bigmali.write_catalog(mock, cat_path)
    run_path = bigmali.save_run(run, tmp_path / "run.nc")
    out = tmp_path / "maps"
    assert (
        cli.main(
            [
                "massmap",
                str(run_path),
                str(cat_path),
                "-o",
                str(out),
                "--pixels",
                "4",
                "--draws",
                "20",
                "--keep",
                "5",
                "--quiet",
                "--field",
                f"{float(np.median(mock.ra))},{float(np.median(mock.dec))},0.2",
            ]
        )
        == 0
    )
    assert "coverage_68" in json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # refused when parsed, before any work
        cli.main(["massmap", str(run_path), str(cat_path), "-o", str(out), "--zbins", "1,0.5", "--quiet"])
    assert exit_.value.code == 2 and "argument --zbins: '1,0.5'" in capsys.readouterr().err
    small = tmp_path / "small.fits"
    bigmali.write_catalog(bigmali.simulate(n_halos=50, seed=1), small)
    assert cli.main(["massmap", str(run_path), str(small), "-o", str(out), "--quiet"]) == 1
    assert "the run was fitted to 1500 halos, the catalog has 50" in capsys.readouterr().err
    # The same number of halos but other luminosities: refused, naming the column and the first row.
    other = bigmali.Catalog.from_arrays(
        z=mock.z, lum_obs=mock.lum_obs * np.where(np.arange(len(mock)) == 7, 2.0, 1.0), ra=mock.ra, dec=mock.dec
    )
    bigmali.write_catalog(other, tmp_path / "other.fits")
    assert (
        cli.main(["massmap", str(run_path), str(tmp_path / "other.fits"), "-o", str(tmp_path / "m2"), "--quiet"]) == 1
    )
    err = capsys.readouterr().err
    assert "column 'lum_obs' differs in 1 of 1500 rows, first at row 7" in err and "--force" in err
    assert not (tmp_path / "m2").exists()
    # --force goes on with a warning.
    assert (
        cli.main(
            [
                "massmap",
                str(run_path),
                str(tmp_path / "other.fits"),
                "-o",
                str(tmp_path / "m2"),
                "--quiet",
                "--pixels",
                "4",
                "--draws",
                "5",
                "--keep",
                "2",
                "--force",
            ]
        )
        == 0
    )
    assert "warning: the catalog and prior are not those the run was fitted to" in capsys.readouterr().err
