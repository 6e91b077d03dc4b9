"""The files a .dcq reader is given: regular files only, never a blocking open; and the plain
file names a dataset directory or a work directory may list."""

from __future__ import annotations

import builtins
import os
import stat
from typing import BinaryIO

from ..errors import NotADcqFile

MAX_NAME_BYTES = 255


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("FIFO", "symbolic link"...)."""
    kinds = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"),
             (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def plain_name(name: object) -> bool:
    """One path component (spec §13): not empty, ``.`` or ``..``, without ``/``, ``\\`` or NUL,
    at most 255 bytes of UTF-8."""
    return (isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")
            and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; else raise :class:`NotADcqFile` naming
    what it is. Opened without blocking, so a FIFO or a device never hangs the caller."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            err = NotADcqFile(f"not a regular file (a {file_kind(mode)})")
            err.path = str(path)
            raise err
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return builtins.open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
