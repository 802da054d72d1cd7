"""Writing files so a crash leaves the old version or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fsync_folder", "replacing", "write_atomic"]


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, data: bytes, *, backup: Path | None = None) -> Iterator[None]:
    """Write `data` to a temp file in `path`'s own folder and fsync it; then run the block;
    then, if it raised nothing, `os.replace` the temp file over `path` (same filesystem, so
    atomic), keeping the file's mode and, with `backup`, the previous version there (a
    hard link: no copy).  Raises OSError as it comes, before the block if the folder
    cannot be written, so the block's own writes happen only when the replace can.
    """
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield
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


def write_atomic(path: Path, data: bytes, *, backup: Path | None = None) -> None:
    """Replace `path` with `data` atomically (see `replacing`)."""
    with replacing(path, data, backup=backup):
        pass
