"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every file segwise writes goes to a temporary file beside its final name (`.<name>.segwise-<pid>-<random>.tmp`),
is fsynced, then renamed over the final name. A killed or failed write leaves at most such a temporary file, which
the next segwise process to write into that folder removes (`remove_stale_temps`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from segwise.errors import SegwiseError

_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and restored at once

_STARTED = time.time()  # temporary files older than this process cannot be ones it is still writing
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\..*\.segwise-(\d+)-[a-z0-9_]{8}\.tmp", re.S)
_OLD_TEMP_NAMES = (  # what earlier segwise versions left: `.<name>.<mkstemp random>.tmp` and `.<name>.tif.partial`
    re.compile(r"\..+\.[a-z0-9_]{8}\.tmp", re.S),
    re.compile(r"\..+\.tif\.partial", re.S),
)
_NAME_KEEP = 96  # bytes of the final name kept in a temporary name (file names are limited to 255 bytes)
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}
_swept: set[Path] = set()


def _temp_prefix(path: Path) -> str:
    """`.<name, cut to _NAME_KEEP bytes>.segwise-<pid>-`: the random part and `.tmp` follow."""
    name = os.fsencode(path.name)[:_NAME_KEEP]
    return f".{os.fsdecode(name)}.segwise-{os.getpid()}-"


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path` (not created), for writers that must open their file themselves
    (rasterio); rename it over `path` when done, and unlink it on failure."""
    path = Path(path)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_"
    random = "".join(secrets.choice(alphabet) for _ in range(8))
    return path.with_name(f"{_temp_prefix(path)}{random}{_TEMP_SUFFIX}")


def write_error(path: Path, exc: OSError) -> SegwiseError:
    """The error for a failed write of `path`: a full disk, a folder that is not writable, or the system's reason."""
    path = Path(path)
    if exc.errno in _DISK_FULL:
        return SegwiseError(f"cannot write to {path}: the disk is full ({exc.strerror}); free some space on the "
                            f"disk holding {path.parent} or choose another output directory, then run the command "
                            "again")
    if exc.errno in _NOT_WRITABLE:
        return SegwiseError(f"cannot write to {path}: {path.parent} is not writable ({exc.strerror}); fix its "
                            "permissions or choose a writable output directory")
    return SegwiseError(f"cannot write to {path}: {exc.strerror or exc}; choose a writable output directory")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    An existing file under `path` (a previous or damaged output) is replaced, never refused, and survives intact
    when the write fails. OSErrors (disk full, permissions) become a SegwiseError naming `path`; whatever the
    failure, the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_once(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates the file 0600; give it the mode of the file it replaces, else the usual 0666 & ~umask
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_stream(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`atomic_write` for writers that take an open binary file (numpy, tifffile: given a name, numpy would add
    `.npy` to the temporary one)."""

    def write_handle(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    atomic_write(path, write_handle)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write_stream(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed, prove it is writable (with an error that says what to change) and remove the
    temporary files killed segwise writes left in it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _sweep_once(path)
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path / "probe"), suffix=_TEMP_SUFFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SegwiseError(f"output directory {path} is not writable ({exc.strerror}); "
                           "pass another directory") from None
    return path


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove segwise's own temporary files in `folder` that a killed or failed write left behind; returns them.

    Only names of segwise's pattern are touched, only when older than this process, and (on POSIX) only when the
    process that made them is gone, so a write another segwise process is doing at the same time is kept.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(".") and _is_stale_temp(entry):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass  # gone already, or not ours to remove: the write itself will report a real problem
    return removed


def _is_stale_temp(entry: os.DirEntry) -> bool:
    match = _TEMP_NAME.fullmatch(entry.name)
    if match is None and not any(pattern.fullmatch(entry.name) for pattern in _OLD_TEMP_NAMES):
        return False
    try:
        if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= _STARTED:
            return False
    except OSError:
        return False
    return match is None or not _process_alive(int(match.group(1)))


def _process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (always assumed outside POSIX, where the check kills)."""
    if pid == os.getpid() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def _sweep_once(folder: Path) -> None:
    """`remove_stale_temps(folder)` the first time this process writes into `folder`."""
    key = Path(os.path.abspath(folder))
    if key not in _swept:
        _swept.add(key)
        remove_stale_temps(key)
