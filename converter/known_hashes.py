"""Check a user's source files against the sha256 the registry knows for them.

checkpoints/registry.json lists, per model, `source.known_sha256` {file name: sha256}: Sandberg's
released .pb / .meta / .index / .data files and keras-facenet's .h5 files, as published in
keras-facenet 0.3.2's keras_facenet/metadata.py (`source.known_sha256_from` says so). A file whose
name is listed but whose bytes differ is reported: a warning by default (a re-exported or edited
file can still be a valid source), an error with --strict. Files the registry does not list are
not judged.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .errors import ConversionError


@dataclass
class HashCheck:
    matched: list[str] = field(default_factory=list)      # "file: sha256 of <model> (<where from>)"
    mismatched: list[str] = field(default_factory=list)   # warnings naming the file

    def to_dict(self) -> dict:
        return {"matched": self.matched, "mismatched": self.mismatched}


@functools.lru_cache(maxsize=1)
def known_sha256() -> dict[str, tuple[str, str]]:
    """{file name: (sha256, model name)} over every registry entry."""
    from ..models.hub.registry import default_registry

    known: dict[str, tuple[str, str]] = {}
    for entry in default_registry():
        for name, digest in (entry.source.get("known_sha256") or {}).items():
            known[name] = (digest, entry.name)
    return known


def check_files(files: list[dict], *, strict: bool = False) -> HashCheck:
    """`files`: [{'name', 'sha256'}] of the source. Raises ConversionError on a mismatch when strict."""
    known = known_sha256()
    result = HashCheck()
    for f in files:
        if f["name"] not in known:
            continue
        digest, model = known[f["name"]]
        if f["sha256"] == digest:
            result.matched.append(f"{f['name']}: the sha256 of {model}'s released file")
        else:
            result.mismatched.append(
                f"{f['name']}: sha256 {f['sha256']} differs from {model}'s released file ({digest}, "
                f"from keras-facenet 0.3.2's metadata): not the file Sandberg published")
    if strict and result.mismatched:
        raise ConversionError("known-hash check failed (--strict):\n  " + "\n  ".join(result.mismatched))
    return result
