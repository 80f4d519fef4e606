"""Small utilities: bound models, the kept-objects cache and the compilation cache's directory."""

import os

import jax

from bigmali.utils import CACHE_ENV, bind, kept, use_compilation_cache


def _f(a, b=1, c=2):
    return a + b + c


def test_bind_gives_one_object_per_binding():
    assert bind(_f, b=3) is bind(_f, b=3)  # compiled samplers are keyed by it
    assert bind(_f, b=3) is not bind(_f, b=4)
    assert bind(_f, c=1, b=3) is bind(_f, b=3, c=1) and bind(_f, b=3)(1) == 6


def test_kept_makes_once_and_drops_the_least_recently_used():
    cache, made = {}, []

    def make(k):
        made.append(k)
        return k * 10

    for k in (1, 2, 1, 3):
        assert kept(cache, k, lambda k=k: make(k), size=2) == k * 10
    assert made == [1, 2, 3] and list(cache) == [1, 3]  # 2 was used least recently


def test_compilation_cache_directory(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv(CACHE_ENV, "off")
        assert use_compilation_cache() is None
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a" / "b"))
        assert use_compilation_cache() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "a" / "b")
        if os.geteuid() != 0:  # root writes anywhere
            locked = tmp_path / "locked"
            locked.mkdir(mode=0o500)
            assert use_compilation_cache(locked / "jax") is None
        assert use_compilation_cache("/proc/no-such-dir") is None
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
