"""The halo axis across devices and processes gives the one-device likelihood and gradient."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).with_name("sharded_run.py")


def _run(args, devices: int = 1):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _result(proc):
    """The JSON line the process printed (None for a process that prints none; Gloo
    announces its connections on stdout)."""
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def test_devices_and_processes_give_the_one_device_likelihood_and_gradient():
    """Value and gradient at two points of 3,001 halos (without, then with per-halo errors and a
    flux limit, then read as one noise; in blocks of 256 halos): 4 forced host devices in one
    process, and two processes joined by jax.distributed (a coordinator on 127.0.0.1), against
    one device. Only the order of the sum differs: within 1e-10 relative (the issue's bound).
    The 4-device process also checks the 2017 importance-sampling likelihood sharded, and the
    halo-mass draws and PPC replicates with the halos split.
    The 4-device process also fits a mock with the halos sharded and unsharded (bigmali.fit
    with shard_halos): collapsed NUTS, and the IS likelihood's methods is_prior, pmmh and
    nuts_is. One test, so the three processes run at once whichever worker runs it."""
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_run(["local"], devices=4)] + [_run(["process", str(i), "2", str(port)]) for i in range(2)]
    local, distributed, second = (_result(p) for p in procs)
    assert local["devices"] == 4 and local["shards"] == 4
    np.testing.assert_allclose(local["all"], local["one"], rtol=1e-10, atol=0)
    assert distributed["processes"] == 2 and distributed["devices"] == 2 and distributed["shards"] == 2
    assert second is None  # only process 0 reports
    np.testing.assert_allclose(distributed["all"], local["one"], rtol=1e-10, atol=0)
    # ... and with per-halo errors and a flux limit (their per-halo columns split the same way).
    np.testing.assert_allclose(local["all_selected"], local["one_selected"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(distributed["all_selected"], local["one_selected"], rtol=1e-10, atol=0)
    # ... and read as one noise (the fixed-noise path), every device's halos in blocks of 256.
    np.testing.assert_allclose(local["all_fixed"], local["one_fixed"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(distributed["all_fixed"], local["one_fixed"], rtol=1e-10, atol=0)
    # The 2017 importance-sampling likelihood with its blocks on 4 devices: each halo's
    # estimate from the same normals, so again only the sum's order differs.
    np.testing.assert_allclose(local["is_all"], local["is_one"], rtol=1e-10, atol=0)
    # Halo-mass draws and PPC replicates with the halos on 4 devices (padded to 3,004): the
    # random draws are partitionable, so the numbers are the one-device ones exactly.
    assert local["mass_shards"] == 4 and local["mass_diff"] == 0.0
    assert local["ppc_diff"] == 0.0 and local["ppc_shape"] == [2, 3001]
    # A fit with the halos on 4 devices draws what the unsharded fit draws for the same seed.
    # Only the sums' order differs (gradients within 1e-15 relative), and NUTS amplifies that
    # about tenfold every ten iterations: after 50 the draws agree to ~1e-6 sd; hundreds of
    # iterations on they are different draws from the same posterior.
    one, sharded = np.asarray(local["fit_one"]), np.asarray(local["fit_all"])
    sd = one.std(axis=(1, 2), keepdims=True)
    assert np.max(np.abs(sharded - one) / sd) < 1e-4
    # The IS methods with the halos on 4 devices: is_prior's estimates within 1e-10 relative;
    # pmmh's chain takes the same steps (its accept tests see estimates that differ by ~1e-12);
    # nuts_is's draws agree as collapsed NUTS's do.
    is_one, is_all = local["is_fits_one"], local["is_fits_all"]
    np.testing.assert_allclose(is_all["is_prior"], is_one["is_prior"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(is_all["pmmh"], is_one["pmmh"], rtol=1e-10, atol=0)
    one, sharded = np.asarray(is_one["nuts_is"]), np.asarray(is_all["nuts_is"])
    assert len(np.unique(one[0])) > 10  # the chain moves, so the comparison says something
    assert np.max(np.abs(sharded - one) / one.std(axis=(1, 2), keepdims=True)) < 1e-4
