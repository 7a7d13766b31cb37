"""The model registry: `checkpoints/registry.json` as typed entries, with schema validation.

Read through importlib.resources, so an installed package finds it too. An entry is found by its
id (`inception_resnet_v1.vggface2`), its name (`20180402-114759`), its tag (`vggface2`) or an
alias, case-insensitively. Pure data: no file lookups here (see pretrained.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

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


def _entry_file_names(entry: Entry) -> list[str]:
    """Exact file names that stand for an Inception entry, most specific first."""
    names = []
    w = entry.weight("model")
    if w is not None and w.file:
        names.append(w.file)
    names += [m.file for m in entry.mirrors]
    names += [entry.stem + s for s in WEIGHT_SUFFIXES]
    return list(dict.fromkeys(names))


_DEFAULT: Registry | None = None


def registry_path() -> Path:
    """`checkpoints/registry.json`: the installed data package, else the source checkout's."""
    return checkpoints_dir() / REGISTRY_FILE


def checkpoints_dir() -> Path:
    """The `facenet_tf2pt.checkpoints` data folder, beside `models/` both installed and in a checkout
    (the package is the repository root, pyproject.toml's package-dir), so a `checkpoints/` folder in
    the user's working directory is never mistaken for it."""
    return Path(__file__).resolve().parents[2] / "checkpoints"


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
