"""Files written safely: every output is replaced in one rename, and output paths are checked first.

Every file bigmali writes (runs, catalogs, maps, reports, plots, SBC state, prior caches)
goes through :func:`atomic_path`: the writer fills a temporary file in the target's own
directory, which is flushed to disk and renamed over the target only when the write has
finished. An interrupted write (an exception, Ctrl-C, SIGTERM through the CLI's handler, a
full disk) removes the temporary file and leaves whatever was at the target untouched; a
hard kill (SIGKILL, power loss) can at worst leave a hidden ``.NAME.*.partial*`` file beside
it, never a half-written target. The rename is atomic because both files are on one
filesystem.

:func:`check_output_file` and :func:`check_output_dir` are called before any work starts,
so that a fit of many minutes is not lost to a typo in ``--out``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "check_output_file", "check_output_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; when the block ends normally it replaces ``path``.

    The temporary name keeps the target's suffix (``.NAME.XXXX.partial.SUFFIX``), so writers
    that choose a format from the suffix (matplotlib) write the right one. On any exception,
    ``KeyboardInterrupt`` and ``SystemExit`` included, the temporary file is removed and the
    exception propagates; the target is then exactly what it was before.
    """
    path = Path(path)
    directory = path.parent
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".partial" + path.suffix)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file gets the umask's mode
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _probe_writable(directory: Path, what: str) -> None:
    """Create and remove a file in ``directory``: the only test that root, ACLs, read-only
    mounts and immutable flags all answer truthfully (``os.access`` does not)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".bigmali-write-test.")
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in directory {str(directory)!r}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path, *, flag: str = "--out", overwrite: bool = True) -> Path:
    """Check, before any work, that ``path`` can be written; return it as a ``Path``.

    Raises ``ValueError`` naming ``flag`` and the path when the path is a directory, its
    directory is missing, is not a directory or cannot be written, or when the file exists
    and ``overwrite`` is false.
    """
    path = Path(path)
    what = f"{flag} {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{what} is a directory; give a file name")
    directory = path.parent
    if not directory.exists():
        raise ValueError(f"{what}: directory {str(directory)!r} does not exist (create it first)")
    if not directory.is_dir():
        raise ValueError(f"{what}: {str(directory)!r} is not a directory")
    if path.exists() and not overwrite:
        raise ValueError(
            f"{what} exists; pass --overwrite to replace it (the old file stays until the new one is complete)"
        )
    _probe_writable(directory, what)
    return path


def check_output_dir(path, *, flag: str = "--out") -> Path:
    """Check, before any work, that directory ``path`` exists and can be written, or can be created.

    Nothing is created here: a missing directory is made when its first file is written.
    """
    path = Path(path)
    what = f"{flag} {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what}: {str(existing)!r} is a file, not a directory")
    _probe_writable(existing, what)
    return path
