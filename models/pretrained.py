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
import json
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .atomic_io import atomic_output, atomic_write_bytes, sha256_file
from .serialization import load_state_dict_file

__all__ = ["ChecksumError", "Entry", "Mirror", "Registry", "WeightFile", "checkpoints_dir", "default_registry",
           "load_mtcnn_state_dicts", "resolve_inception_weights", "resolve_mtcnn_weights", "search_dirs",
           "validate_registry"]

ENV_HOME = "FACENET_HOME"
REGISTRY_FORMAT = "facenet-tf2pt/registry/1"
REGISTRY_FILE = "registry.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
ARCHES = ("inception_resnet_v1", "mtcnn")
PREPROCESSING = ("fixed", "prewhiten")
MTCNN_ROLES = ("pnet", "rnet", "onet")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA8_NAME = re.compile(r"-(?P<sha8>[0-9a-f]{8})$")
_TAG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SANDBERG_NAME = re.compile(r"^\d{8}-\d{6}$")
_FIXTURE_NAME = re.compile(r"^fixture-\d+d-seed\d+$")
_DOWNLOAD_CHUNK = 1 << 20
_DOWNLOAD_LIMIT = 1 << 30          # refuse to download more than this when the size is unknown


class ChecksumError(ValueError):
    """A file's sha256 (or size) differs from what the registry, its name or its record promises."""


# ----------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class WeightFile:
    """One converted file of an entry (Inception: role 'model'; MTCNN: 'pnet', 'rnet', 'onet')."""
    role: str
    file: str | None                 # relative to a search dir; None until a conversion is recorded
    file_pattern: str | None         # '<name>-<tag>-{sha8}.pt' for release files
    sha256: str | None
    size: int | None
    url: str | None                  # where this exact file is published (sha256 known), if anywhere
    reason: str | None               # why sha256 is null, when it is


@dataclass(frozen=True)
class Mirror:
    """Somebody else's already-converted file with our key names (e.g. facenet-pytorch's release)."""
    url: str
    file: str
    sha256: str | None
    size: int | None
    provider: str
    reason: str | None               # why sha256 is null, when it is (trust on first use)


@dataclass(frozen=True)
class Entry:
    id: str
    arch: str
    name: str
    tag: str
    aliases: tuple[str, ...]
    description: str
    training_set: str | None
    embedding_size: int | None
    num_classes: int | None
    lfw_accuracy: float | None
    preprocessing: str
    image_size: int | None
    param_count: int
    source: Mapping = field(default_factory=dict, hash=False)
    weights: tuple[WeightFile, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping) -> "Entry":
        return cls(
            id=d["id"], arch=d["arch"], name=d["name"], tag=d["tag"], aliases=tuple(d["aliases"]),
            description=d["description"], training_set=d["training_set"],
            embedding_size=d["embedding_size"], num_classes=d["num_classes"],
            lfw_accuracy=d["lfw_accuracy"], preprocessing=d["preprocessing"], image_size=d["image_size"],
            param_count=d["param_count"], source=dict(d["source"]),
            weights=tuple(WeightFile(**w) for w in d["weights"]),
            mirrors=tuple(Mirror(**m) for m in d["mirrors"]), notes=tuple(d["notes"]))

    @classmethod
    def from_state_dict(cls, name: str, state_dict: Mapping) -> "Entry":
        """An unregistered Inception-ResNet-V1 file: sizes read from its tensors."""
        if "last_linear.weight" not in state_dict:
            raise ValueError(f"{name}: no 'last_linear.weight': not an InceptionResnetV1 state_dict")
        emb = int(state_dict["last_linear.weight"].shape[0])
        classes = int(state_dict["logits.weight"].shape[0]) if "logits.weight" in state_dict else None
        return cls(id=f"file:{name}", arch="inception_resnet_v1", name=name, tag="file", aliases=(),
                   description=f"weights file {name}", training_set=None, embedding_size=emb,
                   num_classes=classes, lfw_accuracy=None, preprocessing="fixed", image_size=160,
                   param_count=sum(int(t.numel()) for k, t in state_dict.items() if _is_param(k)))

    @property
    def stem(self) -> str:
        """`<name>-<tag>`: the start of every converted file name of this entry."""
        return f"{self.name}-{self.tag}"

    @property
    def lookup_keys(self) -> set[str]:
        return {_norm(k) for k in (self.id, self.name, self.tag, *self.aliases)}

    def weight(self, role: str) -> WeightFile | None:
        return next((w for w in self.weights if w.role == role), None)


def _is_param(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


class Registry:
    """The known models. `get(name)` accepts an id, name, tag or alias."""

    def __init__(self, entries: Iterable[Entry], path: Path | None = None):
        self.entries = list(entries)
        self.path = path
        self._by_key: dict[str, Entry] = {}
        for e in self.entries:
            for key in e.lookup_keys:
                other = self._by_key.setdefault(key, e)
                if other is not e:
                    raise ValueError(f"registry: {key!r} names both {other.id} and {e.id}")

    @classmethod
    def from_dict(cls, data: Mapping, path: Path | None = None) -> "Registry":
        problems = validate_registry(data)
        if problems:
            raise ValueError(f"{path or 'registry'}: invalid registry:\n  " + "\n  ".join(problems))
        return cls((Entry.from_dict(d) for d in data["models"]), path)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Registry":
        if path is None:
            return default_registry()
        path = Path(path)
        return cls.from_dict(json.loads(path.read_text()), path)

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def names(self) -> list[str]:
        return sorted({a for e in self.entries for a in (e.tag, e.name)})

    def find(self, name: str) -> Entry | None:
        return self._by_key.get(_norm(str(name)))

    def get(self, name: str, arch: str | None = None) -> Entry:
        entry = self.find(name)
        if entry is None or (arch is not None and entry.arch != arch):
            known = sorted({e.tag for e in self.entries if arch is None or e.arch == arch}
                           | {e.name for e in self.entries if arch is None or e.arch == arch})
            raise ValueError(f"pretrained={name!r}: not a registered model and not an existing file; "
                             f"known names: {', '.join(known)}")
        return entry

    def for_file(self, path: Path) -> Entry | None:
        """The Inception entry whose converted-file names `path` follows (`<name>-<tag>[-<sha8>]`)."""
        stem = _SHA8_NAME.sub("", path.stem)
        for e in self.entries:
            if e.arch == "inception_resnet_v1" and (stem == e.stem or path.name in _entry_file_names(e)):
                return e
        return None


_DEFAULT: Registry | None = None


def registry_path() -> Path:
    """`checkpoints/registry.json`: the installed data package, else the source checkout's."""
    return checkpoints_dir() / REGISTRY_FILE


def checkpoints_dir() -> Path:
    """The `checkpoints/` data folder: the installed `checkpoints` data package (importlib.resources),
    else the folder beside `models/` (a source checkout, where the editable install does not map it).
    A `checkpoints/` folder without `__init__.py` in the current directory (a namespace package)
    is not mistaken for it."""
    try:
        import importlib.util
        from importlib.resources import files

        spec = importlib.util.find_spec("checkpoints")
        if spec is not None and spec.origin and spec.origin.endswith("__init__.py"):
            path = Path(str(files("checkpoints")))
            if (path / REGISTRY_FILE).is_file():
                return path
    except (ImportError, TypeError, ValueError):
        pass
    return Path(__file__).resolve().parents[1] / "checkpoints"


def default_registry() -> Registry:
    global _DEFAULT
    if _DEFAULT is None:
        path = registry_path()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{path}: the model registry is missing from this installation") from e
        _DEFAULT = Registry.from_dict(data, path)
    return _DEFAULT


def validate_registry(data: Mapping) -> list[str]:
    """Schema problems of a registry dict (empty when valid)."""
    problems: list[str] = []
    if data.get("format") != REGISTRY_FORMAT:
        problems.append(f"format is {data.get('format')!r}, expected {REGISTRY_FORMAT!r}")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        return problems + ["'models' must be a non-empty list"]
    required = {f.name for f in dataclasses.fields(Entry)}
    wf_keys = {f.name for f in dataclasses.fields(WeightFile)}
    mirror_keys = {f.name for f in dataclasses.fields(Mirror)}
    ids = set()
    for i, d in enumerate(models):
        where = f"models[{i}] ({d.get('id', '?')})"
        missing, extra = required - set(d), set(d) - required
        if missing or extra:
            problems.append(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(extra)}")
            continue
        if d["id"] in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(d["id"])
        if d["arch"] not in ARCHES:
            problems.append(f"{where}: arch {d['arch']!r} not in {ARCHES}")
        if not _TAG.match(d["tag"]):
            problems.append(f"{where}: tag {d['tag']!r} is not lowercase-words-with-hyphens")
        if d["id"] != f"{d['arch']}.{d['tag']}":
            problems.append(f"{where}: id must be '<arch>.<tag>' = {d['arch']}.{d['tag']}")
        if d["preprocessing"] not in PREPROCESSING:
            problems.append(f"{where}: preprocessing {d['preprocessing']!r} not in {PREPROCESSING}")
        if not isinstance(d["param_count"], int) or d["param_count"] <= 0:
            problems.append(f"{where}: param_count must be a positive int")
        if not isinstance(d["aliases"], list) or not all(isinstance(a, str) and a for a in d["aliases"]):
            problems.append(f"{where}: aliases must be a list of names")
        if d["arch"] == "inception_resnet_v1":
            if not (_SANDBERG_NAME.match(d["name"]) or _FIXTURE_NAME.match(d["name"])):
                problems.append(f"{where}: name {d['name']!r} is neither YYYYMMDD-HHMMSS nor fixture-<emb>d-seed<n>")
            if d["embedding_size"] not in (128, 512):
                problems.append(f"{where}: embedding_size must be 128 or 512")
            if d["num_classes"] is not None and (not isinstance(d["num_classes"], int) or d["num_classes"] < 1):
                problems.append(f"{where}: num_classes must be null or a positive int")
            if [w.get("role") for w in d["weights"]] != ["model"]:
                problems.append(f"{where}: an Inception entry has exactly one weights file, role 'model'")
        else:
            if sorted(w.get("role") for w in d["weights"]) != sorted(MTCNN_ROLES):
                problems.append(f"{where}: MTCNN weights must be pnet, rnet, onet")
        lfw = d["lfw_accuracy"]
        if lfw is not None and not (isinstance(lfw, float) and 0.5 < lfw <= 1.0):
            problems.append(f"{where}: lfw_accuracy must be null or a fraction")
        src = d["source"]
        if not isinstance(src, dict) or not {"dir", "files", "urls", "generator"} <= set(src):
            problems.append(f"{where}: source needs dir, files, urls, generator")
        elif (src["dir"] is None) == (src["generator"] is None):
            problems.append(f"{where}: source needs exactly one of dir (under checkpoints/) and generator")
        for w in d["weights"]:
            if set(w) != wf_keys:
                problems.append(f"{where}: weights keys {sorted(w)} != {sorted(wf_keys)}")
                continue
            problems += _hash_fields(where, w, w["file"] or w["file_pattern"])
            if w["file"] is None and w["file_pattern"] is None:
                problems.append(f"{where}: weights {w['role']}: needs file or file_pattern")
            if w["file_pattern"] is not None and w["file_pattern"] != f"{d['name']}-{d['tag']}-{{sha8}}.pt":
                problems.append(f"{where}: file_pattern must be '<name>-<tag>-{{sha8}}.pt'")
            if w["file"] is not None and w["file_pattern"] is not None and w["sha256"]:
                expected = w["file_pattern"].format(sha8=w["sha256"][:8])
                if w["file"] != expected:
                    problems.append(f"{where}: file {w['file']!r} should be {expected!r} (its hash prefix)")
        for m in d["mirrors"]:
            if set(m) != mirror_keys:
                problems.append(f"{where}: mirror keys {sorted(m)} != {sorted(mirror_keys)}")
                continue
            problems += _hash_fields(where, m, m["url"])
            if Path(m["file"]).suffix not in WEIGHT_SUFFIXES or "/" in m["file"]:
                problems.append(f"{where}: mirror file {m['file']!r} must be a plain weights file name")
    return problems


def _hash_fields(where: str, d: Mapping, label) -> list[str]:
    out = []
    if d["sha256"] is None:
        if not d["reason"]:
            out.append(f"{where}: {label}: sha256 is null without a stated reason")
    elif not _SHA256.match(d["sha256"]):
        out.append(f"{where}: {label}: sha256 is not 64 lowercase hex digits")
    if d["size"] is not None and (not isinstance(d["size"], int) or d["size"] <= 0):
        out.append(f"{where}: {label}: size must be null or a positive int")
    return out


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
    """Record `digest` beside `path`, and say so loudly: nothing vouched for these bytes."""
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
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


def _entry_file_names(entry: Entry) -> list[str]:
    """Exact file names that stand for an Inception entry, most specific first."""
    names = []
    w = entry.weight("model")
    if w is not None and w.file:
        names.append(w.file)
    names += [m.file for m in entry.mirrors]
    names += [entry.stem + s for s in WEIGHT_SUFFIXES]
    return list(dict.fromkeys(names))


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
        lines.append("  python -m converter.mtcnn_fetch checkpoints/tf/mtcnn")
        lines.append(f"  facenet-convert mtcnn checkpoints/tf/mtcnn -o {_relative_checkout_path(out)}")
    elif src.get("generator"):
        lines.append("It is generated: run `make checkpoints` (python -m converter.regenerate).")
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
    raise FileNotFoundError(_missing_message(entry, name_for_errors or entry.tag, looked, dirs, attempts))


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
        state_dict = load_state_dict_file(path)
        if entry is None:
            return Entry.from_state_dict(path.name, state_dict), state_dict
        return _fit_entry(entry, state_dict, str(path)), state_dict
    entry = registry.get(str(name_or_path), arch="inception_resnet_v1")
    path = find_inception_file(entry, download_missing=download, progress=progress,
                               name_for_errors=str(name_or_path))
    state_dict = load_state_dict_file(path)
    return _fit_entry(entry, state_dict, str(path)), state_dict


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
    raise FileNotFoundError(_missing_message(entry, "mtcnn", ["pnet.pt", "rnet.pt", "onet.pt"], dirs, attempts))


def load_mtcnn_state_dicts(path: str | os.PathLike | None = None, **kw) -> dict[str, dict]:
    """{'pnet': state_dict, 'rnet': ..., 'onet': ...} from `resolve_mtcnn_weights(path)`."""
    files = _mtcnn_files(resolve_mtcnn_weights(path, **kw))
    return {role: load_state_dict_file(f) for role, f in files.items()}
