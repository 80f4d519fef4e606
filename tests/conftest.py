"""Shared fixtures: the default prior is loaded once per test session."""

import pytest

import bigmali


@pytest.fixture(scope="session")
def prior():
    return bigmali.load_mass_prior()


@pytest.fixture(scope="session")
def prior_linear():
    return bigmali.load_mass_prior(z_interp="linear")
