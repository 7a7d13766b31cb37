"""Atomic file writes and hashes, with no torch and no TensorFlow: shared by the converter's
writer, the registry's downloads and the HDF5 references.

Atomic: bytes go to a temp file in the destination folder (unnamed until complete, where Linux's
O_TMPFILE allows), are fsync'ed, then renamed over the target, so a crash leaves either the old
file or the new one, never half of one, and a kill mid-write leaves no temp file behind.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterator, Mapping

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    from .paths import open_regular

    h = hashlib.sha256()
    with open_regular(path) as f:   # a FIFO or device is refused, not read forever
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_TEMP_SUFFIX = ".tmp"


_NAME_MAX = 255        # bytes per file name (ext4, xfs, apfs, ...)
_TEMP_EXTRA = 1 + 1 + 10 + 1 + 8 + len(_TEMP_SUFFIX)   # "." name "." pid "-" random suffix


def _temp_stem(path: Path) -> str:
    """The target's name as it appears in its temp names: cut (in bytes) so that
    a temp name of a legal 255-byte target name still fits in 255 bytes."""
    return os.fsdecode(os.fsencode(path.name)[: _NAME_MAX - _TEMP_EXTRA])


def _temp_name(path: Path) -> Path:
    """`.<name>.<pid>-<random>.tmp` beside `path` (the name cut to fit): hidden, unique per
    call, and recognisably ours (see `_remove_stale_temps`)."""
    return path.with_name(f".{_temp_stem(path)}.{os.getpid()}-{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True   # someone else's process, or not a pid we can judge: leave its file alone
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer of `path` left behind (a kill between naming a temp
    file and renaming it, or on a filesystem without O_TMPFILE): only files named like ours for
    this target whose writing process is gone."""
    pattern = re.compile(rf"^\.{re.escape(_temp_stem(path))}\.(\d+)-[0-9a-f]{{8}}{re.escape(_TEMP_SUFFIX)}$")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        m = pattern.match(name)
        if m and int(m[1]) != os.getpid() and not _pid_alive(int(m[1])):
            try:
                os.unlink(path.parent / name)
            except OSError:
                pass


def _open_temp(path: Path) -> tuple[int, Path | None]:
    """An fd to write `path`'s new bytes into. Where the OS allows (Linux O_TMPFILE), the file
    has no name until it is complete, so a writer killed mid-write leaves nothing behind;
    otherwise a named temp file beside the target (returned, for cleanup)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(path.parent, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600), None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    return _named_temp(path)


def _named_temp(path: Path) -> tuple[int, Path]:
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    return fd, tmp


def _name_unnamed(fd: int, path: Path) -> Path | None:
    """Give an O_TMPFILE file a temp name beside `path` (linkat through /proc/self/fd), or None
    when this system does not allow it."""
    tmp = _temp_name(path)
    try:
        proc = os.open("/proc/self/fd", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        # dir fds make Python call linkat(..., AT_SYMLINK_FOLLOW), which links the file itself
        os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True)
    except (OSError, NotImplementedError):
        return None
    finally:
        os.close(proc)
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view[: 1 << 24])
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable (best effort: not every OS/filesystem can fsync a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write several files so that none is replaced unless all were written: each one's bytes
    go to a temp file beside its target (fsync'ed; unnamed where the OS allows), and only then
    are all renamed into place. On any failure the temp files are removed and the targets keep
    their old contents; a process killed while writing leaves no temp file (O_TMPFILE), and a
    temp file that a killed writer did leave is removed by the next write of that target."""
    targets = [Path(p) for p in files]
    orig = dict(zip(targets, files))
    for path in targets:   # fail before anything is written, not between two renames
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    staged: list[list] = []   # [fd or None, named temp or None, target]
    try:
        for path, data in zip(targets, files.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(path)
            fd, tmp = _open_temp(path)
            staged.append([fd, tmp, path])
            _write_all(fd, data)
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        for entry in staged:   # name the unnamed ones: every new file is complete on disk
            fd, tmp, path = entry
            if tmp is None:
                entry[1] = _name_unnamed(fd, path)
                if entry[1] is None:   # cannot be linked here after all: write a named copy
                    os.close(fd)
                    entry[0] = None
                    entry[0], entry[1] = _named_temp(path)
                    _write_all(entry[0], files[orig[path]])
                    os.fchmod(entry[0], 0o644)
                    os.fsync(entry[0])
        for entry in staged:   # only now touch the targets
            os.replace(entry[1], entry[2])
            entry[1] = None
            os.close(entry[0])
            entry[0] = None
        for directory in dict.fromkeys(p.parent for p in targets):
            _fsync_dir(directory)
    except BaseException:
        for fd, tmp, _ in staged:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename; on any failure the temp file is removed."""
    atomic_write_files({path: data})


def atomic_write_image(path: str | os.PathLike, pixels) -> None:
    """Encode an H x W x C uint8 array in the format of `path`'s extension (as `Image.save(path)`
    picks it: .png, .jpg, ...) and write it atomically. ValueError for an unknown extension."""
    import io

    from PIL import Image

    Image.init()
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in Image.EXTENSION:
        raise ValueError(f"{path}: unknown image extension {ext!r}; use .png or .jpg")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=Image.EXTENSION[ext])
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """For writers that need a file name (h5py, streamed downloads): yields a temp path beside
    `path`; when the block ends without error the file is fsync'ed and renamed over `path`,
    otherwise removed. Temp files of dead writers of `path` are cleaned up first."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
