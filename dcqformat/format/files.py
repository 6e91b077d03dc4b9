"""Opening the files a .dcq reader is given: regular files only, and never a blocking open."""

from __future__ import annotations

import builtins
import os
import stat
from typing import BinaryIO

from ..errors import NotADcqFile


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file; else raise :class:`NotADcqFile` naming
    what it is. Opened without blocking, so a FIFO or a device never hangs the caller."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("directory" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else
                    "character device" if stat.S_ISCHR(mode) else "block device" if stat.S_ISBLK(mode) else
                    "socket" if stat.S_ISSOCK(mode) else "special file")
            err = NotADcqFile(f"not a regular file (a {kind})")
            err.path = str(path)
            raise err
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return builtins.open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
