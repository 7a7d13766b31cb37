"""What the project reads and writes, checked before any work: the one place for path safety.

- `check_run_paths(inputs, outputs)`: the output rule of every command. An output that resolves
  to the same file as an input or as another output (same device and inode when it exists, same
  resolved path otherwise: symlinks and hard links included) is refused, as is an output without
  the suffix its format needs, one that is a folder, a FIFO or a device, one under a path that
  is a file, or one whose name is longer than the filesystem allows.
- `open_regular` / `require_regular`: only regular files are read. A FIFO would block `open()`
  forever and a device (`/dev/zero`) never ends, so both are refused before anything is read.
- `read_capped`: a text input (pairs.txt, a report JSON) read with a size cap.
- `walk_files`: a folder walk that visits each real file once (by device and inode), follows
  links only inside the tree, and reports what it skipped (links that leave the tree or loop,
  unreadable folders, FIFOs) instead of hanging or hiding it.

No torch, no TensorFlow: the converter and the `facenet` CLI both use it.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

NAME_MAX = 255          # bytes per path component on Linux/macOS filesystems (ext4, xfs, apfs, ...)
PATH_MAX = 4096


class PathError(ValueError):
    """A path the run must not read or write; the message names it (CLI exit code 2)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path, mode: int) -> PathError:
    return PathError(f"{path}: is {_kind(mode)}, not a regular file; only regular files are read")


def require_regular(path, what: str = "file") -> Path:
    """`path` if it is a regular file (links followed); FileNotFoundError when absent, PathError
    for a folder, FIFO, device or socket. For readers that need a file name (h5py, safetensors)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such {what}", str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    return path


def open_regular(path, what: str = "file", buffering: int = -1):
    """Open `path` for binary reading only if it is a regular file: opened non-blocking (a FIFO
    cannot stall the open), checked with fstat on the very file opened, then made blocking."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"{path}: no such {what}", str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        if getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_capped(path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; PathError for a bigger one."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PathError(f"{path}: larger than {limit} bytes; not a {what}")
    return data


# ------------------------------------------------------------------------------ output rule

def _identity(path: Path):
    """Same file <=> same identity: (device, inode) when the file exists, else its resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def _check_name(path: Path) -> None:
    if len(os.fsencode(str(path))) >= PATH_MAX:
        raise PathError(f"{str(path)[:80]}...: path longer than {PATH_MAX} bytes (ENAMETOOLONG)")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise PathError(f"{path}: the name {part[:40]}... is {len(os.fsencode(part))} bytes, longer "
                            f"than the {NAME_MAX} a file name may have (ENAMETOOLONG)")


def _check_parents(path: Path) -> None:
    """The first existing ancestor must be a folder (else the write fails with ENOTDIR)."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise PathError(f"{parent}: cannot write {path.name} there: it is a file, not a folder")
            return


def check_output(path, suffixes: tuple[str, ...] = ()) -> Path:
    """One output on its own: suffix, name length, parents, and what is there now."""
    path = Path(path)
    _check_name(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        _check_parents(path)
    except OSError as e:
        raise PathError(f"{path}: cannot be written ({e.strerror or e})") from None
    else:
        if stat.S_ISDIR(st.st_mode):
            raise PathError(f"{path}: is a directory; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"{path}: is {_kind(st.st_mode)}; an output must be a regular file")
    if suffixes and not path.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise PathError(f"{path}: output must end in {' or '.join(suffixes)}")
    return path


def _flatten(paths) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p is None:
            continue
        if isinstance(p, (str, os.PathLike)):
            out.append(Path(p))
        else:
            out += _flatten(p)
    return out


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_run_paths(inputs: Iterable = (), outputs: Iterable = (), output_dirs: Iterable = ()) -> None:
    """The output rule, one call per command, before any work. `inputs`: every file (or folder)
    the run reads (None entries and nested lists allowed); `outputs`: `(path, suffixes)` pairs
    (None paths skipped; suffixes may be empty) or bare paths; `output_dirs`: folders the run
    writes files into (refused when one is an input folder, or inside or around one).
    Raises PathError naming both paths."""
    ins = _flatten(inputs)
    outs: list[tuple[Path, tuple[str, ...]]] = []
    for o in outputs:
        path, suffixes = (o, ()) if isinstance(o, (str, os.PathLike)) or o is None else o
        if path is not None:
            outs.append((Path(path), tuple(suffixes)))
    seen_in = {}
    for p in ins:
        seen_in.setdefault(_identity(p), p)
    seen_out: dict = {}
    for path, suffixes in outs:
        check_output(path, suffixes)
        key = _identity(path)
        if key in seen_in:
            raise PathError(f"refused: output {path} is the same file as input {seen_in[key]}; "
                            f"nothing was written")
        if key in seen_out:
            raise PathError(f"refused: outputs {seen_out[key]} and {path} are the same file; "
                            f"nothing was written")
        seen_out[key] = path
    in_dirs = [(p, os.path.realpath(p)) for p in ins if p.is_dir()]
    for d in _flatten(output_dirs):
        _check_name(d)
        if os.path.lexists(d) and not d.is_dir():
            raise PathError(f"{d}: cannot write into it: it is a file, not a folder")
        if not d.exists():
            _check_parents(d)
        real = os.path.realpath(d)
        for p, real_in in in_dirs:
            if _inside(real, real_in) or _inside(real_in, real):
                raise PathError(f"refused: output folder {d} overlaps input folder {p}; "
                                f"give a folder outside it")


# ------------------------------------------------------------------------------------- walk

@dataclass
class Walk:
    files: list[Path] = field(default_factory=list)           # logical paths (under the root as given)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)


def walk_files(root, accept: Callable[[str], bool] = lambda name: True, skip_hidden: bool = True) -> Walk:
    """Every regular file under `root` whose name `accept`s, each real file once, in sorted order.

    Links are followed only while they stay inside the tree; one that leaves it, loops back to a
    folder already walked, or leads to a file already found is reported in `skipped` and not
    followed. Unreadable folders and non-regular files (FIFOs, devices) that `accept` would take
    are reported too. Nothing is opened, so nothing can block."""
    root = Path(root)
    real_root = os.path.realpath(root)
    out = Walk()
    seen_dirs: dict[tuple[int, int], Path] = {}
    seen_files: dict[tuple[int, int], Path] = {}
    st = os.stat(root)
    seen_dirs[(st.st_dev, st.st_ino)] = root
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            out.skipped.append((str(folder), f"unreadable folder ({e.strerror or e}); not walked"))
            continue
        subdirs = []
        for entry in entries:
            if skip_hidden and entry.name.startswith("."):
                continue
            path = folder / entry.name
            link = entry.is_symlink()
            if link:
                target = os.path.realpath(path)
                if not _inside(target, real_root):
                    out.skipped.append((str(path), f"link leaves the tree (to {target}); not followed"))
                    continue
            try:
                st = os.stat(path)
            except OSError as e:
                if accept(entry.name) or not link:
                    out.skipped.append((str(path), f"cannot stat ({e.strerror or e}); skipped"))
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if key in seen_dirs:
                    out.skipped.append((str(path), f"same folder as {seen_dirs[key]} (a link loop or "
                                                   f"duplicate); not walked again"))
                    continue
                seen_dirs[key] = path
                subdirs.append(path)
            elif accept(entry.name):
                if not stat.S_ISREG(st.st_mode):
                    out.skipped.append((str(path), f"{_kind(st.st_mode)}, not a regular file; skipped"))
                elif key in seen_files:
                    out.skipped.append((str(path), f"same file as {seen_files[key]}; read once"))
                else:
                    seen_files[key] = path
                    out.files.append(path)
        stack.extend(reversed(subdirs))
    return out
