"""Writing where the disk may be full: an error that names the path and the bytes it needs, and nothing partial left.

A full filesystem (ENOSPC), a quota (EDQUOT) and this process's file-size limit (EFBIG, `ulimit -f`) are the same to a
run: the file did not fit. `room` turns any of them into `DiskFull`, after removing what was half written."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class DiskFull(Exception):
    """A write that did not fit: its message names the path, the bytes needed and the bytes free there."""


def is_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FULL


def free_bytes(path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing folder)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def file_size_limit() -> int | None:
    """This process's file-size limit (RLIMIT_FSIZE) in bytes, None if unlimited."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def message(path, needed: int, error: OSError | None = None, what: str = "") -> str:
    """`<path>: no room for <what> (<reason>): it needs N bytes, M are free there[; over the file-size limit]`."""
    reason = f" ({os.strerror(error.errno)})" if error is not None and error.errno else ""
    text = f"{path}: no room{' for ' + what if what else ''}{reason}: it needs {needed:,} bytes, {free_bytes(path):,} are free there"
    limit = file_size_limit()
    if limit is not None and needed > limit:
        text += f"; this process's file-size limit (ulimit -f) is {limit:,} bytes"
    return text


def error(path, needed: int, cause: OSError | None = None, what: str = "", hint: str = "", kind=None) -> DiskFull:
    """The `DiskFull` (or its subclass `kind`) for `needed` bytes that did not fit under `path` (`cause`: the write's
    own error)."""
    return (kind or DiskFull)(message(path, needed, cause, what) + (f". {hint}" if hint else ""))


def check_room(path, needed: int, what: str = "", largest: int | None = None, hint: str = "") -> None:
    """Raise `DiskFull` before writing `needed` bytes under `path` (its largest file `largest` bytes) where they cannot
    fit: the free space there, or this process's file-size limit. Some writers cannot fail cleanly: h5py, once a write
    has failed, crashes the process as it exits."""
    limit = file_size_limit()
    if needed > free_bytes(path) or (limit is not None and (largest or needed) > limit):
        raise error(path, needed, None, what, hint)


def remove(partial) -> None:
    """Remove what a write that did not fit left half done (files or folders)."""
    for leftover in map(Path, partial):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def room(path, needed: int, what: str = "", partial=(), hint: str = ""):
    """Inside the block, a write that does not fit raises `DiskFull` naming `path` and `needed` bytes, once each of
    `partial` (files or folders half written) is removed."""
    try:
        yield
    except OSError as cause:
        if not is_full(cause):
            raise
        remove(partial)
        raise error(path, needed, cause, what, hint) from None
