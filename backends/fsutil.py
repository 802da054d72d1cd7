"""Writing files so a crash leaves the old version or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_folder", "write_atomic"]


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, backup: Path | None = None) -> None:
    """Write `data` to a temp file in `path`'s own folder, fsync it, and `os.replace` it
    over `path`, keeping the file's mode.  With `backup`, the previous version is kept
    there (a hard link, so it costs no copy).  Raises OSError as it comes.
    """
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        else:
            if backup is not None:
                link = tmp + ".bak"
                try:
                    os.link(path, link)
                    os.replace(link, backup)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(link)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)
