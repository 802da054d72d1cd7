"""Writing files so a crash leaves the old version or the new one, never half of either.

A path is written *through*, never replaced: a symbolic link is followed to its real
file (which is replaced atomically, the link kept), and a FIFO or a device (`-o
/dev/stdout`, `-o /dev/null`, a named pipe) is a stream, written in place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import BackendUnavailable, ConfigurationError, PermissionDenied

__all__ = ["fsync_folder", "replacing", "shown", "write_atomic", "write_output"]


def shown(path: object) -> str:
    """A path for a one-line message: as it is, or quoted with escapes when it holds a
    line break or another control character."""
    text = str(path)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return repr(text)
    return text


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


def write_output(path: Path, data: bytes) -> None:
    """Write `data` to `path` as a user named it (`inv export -o`): through links to the
    real file, atomically; to a FIFO or device as a stream.  OS errors become the
    contract's: a folder or a read-only place `PermissionDenied`, a missing folder
    `ConfigurationError`, anything else (a full disk) `BackendUnavailable`."""
    real = Path(os.path.realpath(path))
    try:
        try:
            mode = real.stat().st_mode
        except FileNotFoundError:
            mode = 0
        if stat.S_ISDIR(mode):
            raise PermissionDenied(f"cannot write {path}: it is a folder")
        if mode and not stat.S_ISREG(mode):
            with open(real, "wb") as stream:  # a FIFO, a terminal, a device
                stream.write(data)
            return
        write_atomic(real, data)
    except PermissionError:
        raise PermissionDenied(f"cannot write {path}: permission denied") from None
    except FileNotFoundError:
        raise ConfigurationError(f"cannot write {path}: the folder does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR):
            raise PermissionDenied(f"cannot write {path}: {exc.strerror}") from None
        if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
            raise ConfigurationError(f"cannot write {path}: {exc.strerror}") from None
        raise BackendUnavailable(f"cannot write {path}: {exc.strerror}") from None
