"""Apply the mapping table: TF arrays -> a PyTorch state_dict, with strict accounting.

Every TF variable is crossed off when a row uses it. What is left is either declared ignorable
(mapping.IGNORED_VARIABLES) or unexpected. Rows whose variable is absent are missing; arrays of
the wrong shape, dtype or with NaN/Inf are reported with both shapes. Any problem fails the whole
conversion with one message listing all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConversionError
from .mapping import (FEATURES, TF_NAMES, TF_SHAPE_FOR, TRANSFORMS, Naming, bottleneck_weights,
                      expected_shapes, ignored_reason, inception_resnet_v1_table, logits_weights)


@dataclass
class LoadReport:
    source: str
    embedding_size: int | None = None
    num_classes: int | None = None
    mapped: list[str] = field(default_factory=list)            # TF names used
    synthesized: list[str] = field(default_factory=list)       # PyTorch keys with no TF variable
    ignored: dict[str, str] = field(default_factory=dict)      # TF name -> why
    missing: list[tuple[str, str]] = field(default_factory=list)        # (TF name, PyTorch key)
    unexpected: list[tuple[str, tuple]] = field(default_factory=list)   # (TF name, shape)
    mismatched: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    # (TF name, PyTorch key, TF shape found, TF shape expected)
    invalid: list[tuple[str, str]] = field(default_factory=list)        # (TF name, problem)
    noun: str = "TF variable"      # what a source name is (Naming.noun)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.invalid)

    def problems(self) -> list[str]:
        lines = [f"missing {self.noun} {tf} (for {pt})" for tf, pt in self.missing]
        lines += [f"unexpected {self.noun} {tf} {list(shape)} (not in the Inception-ResNet-V1 "
                  f"table nor a declared ignorable variable)" for tf, shape in self.unexpected]
        lines += [f"shape mismatch: {tf} is {list(got)}, expected {list(want)} (for {pt})"
                  for tf, pt, got, want in self.mismatched]
        lines += [f"invalid values: {tf}: {why}" for tf, why in self.invalid]
        return lines

    def summary(self) -> dict:
        return {"embedding_size": self.embedding_size, "num_classes": self.num_classes,
                "mapped_variables": len(self.mapped), "synthesized_tensors": len(self.synthesized),
                "ignored_variables": dict(sorted(self.ignored.items()))}


def _ignored_reason(names: Naming, name: str) -> str | None:
    # the declared ignorables are TF training state; a Keras file holds none (it has no optimizer
    # slots in its weights group), so there everything outside the table is unexpected
    return ignored_reason(name) if names.scheme == "tf" else None


def infer_sizes(arrays: dict[str, np.ndarray], source: str,
                names: Naming = TF_NAMES) -> tuple[int, int | None]:
    """Embedding size from Bottleneck/weights [1792, emb]; classes from Logits/weights [emb, n]."""
    bottleneck, logits_name = bottleneck_weights(names), logits_weights(names)
    w = arrays.get(bottleneck)
    if w is None:
        scopes = sorted({name.split("/", 1)[0] for name in arrays if _ignored_reason(names, name) is None})
        shown = ", ".join(scopes[:8]) + (", ..." if len(scopes) > 8 else "")
        other = [s for s in scopes if s != "InceptionResnetV1" and s.lower().startswith("inception")]
        hint = f"; this looks like another architecture ({other[0]})" if other else ""
        kind = "checkpoint" if names.scheme == "tf" else "Keras file"
        raise ConversionError(f"{source}: no {bottleneck}: not a Sandberg Inception-ResNet-V1 "
                              f"{kind} (found {len(arrays)} variables, "
                              f"top-level scopes: {shown or 'none'}){hint}")
    if w.ndim != 2 or w.shape[0] != FEATURES or w.shape[1] < 1:
        raise ConversionError(f"{source}: {bottleneck} is {list(w.shape)}, expected "
                              f"[{FEATURES}, embedding_size]")
    logits = arrays.get(logits_name)
    num_classes = int(logits.shape[-1]) if logits is not None and logits.ndim == 2 else None
    if num_classes == 0:
        raise ConversionError(f"{source}: {logits_name} is {list(logits.shape)}: a classifier "
                              f"with no classes")
    return int(w.shape[1]), num_classes


def _check_values(tf_name: str, a: np.ndarray) -> str | None:
    if a.dtype != np.float32:
        return f"dtype {a.dtype}, expected float32"
    if not np.isfinite(a).all():
        bad = int(a.size - np.isfinite(a).sum())
        return f"{bad} of {a.size} values are NaN or Inf"
    return None


def arrays_to_state_dict(arrays: dict[str, np.ndarray], source: str, progress: bool = False,
                         names: Naming = TF_NAMES) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Map Sandberg variables to an InceptionResNetV1 state_dict of numpy arrays (new arrays, no
    views of `arrays`; torch.from_numpy makes tensors of them). Raises ConversionError listing
    every problem when the accounting does not balance."""
    embedding_size, num_classes = infer_sizes(arrays, source, names)
    report = LoadReport(source, embedding_size, num_classes, noun=names.noun)
    shapes = expected_shapes(embedding_size, num_classes)
    table = inception_resnet_v1_table(with_logits=num_classes is not None, names=names)
    remaining = dict(arrays)
    state_dict: dict[str, np.ndarray] = {}

    rows = table
    if progress:
        from tqdm import tqdm

        rows = tqdm(table, desc="mapping tensors", unit="tensor", leave=False)
    for row in rows:
        shape = shapes[row.pt_key]
        if row.tf_name is None:
            state_dict[row.pt_key] = TRANSFORMS[row.transform](None, shape)
            report.synthesized.append(row.pt_key)
            continue
        a = remaining.pop(row.tf_name, None)
        if a is None:
            report.missing.append((row.tf_name, row.pt_key))
            continue
        want = TF_SHAPE_FOR[row.transform](shape)
        if tuple(a.shape) != want:
            report.mismatched.append((row.tf_name, row.pt_key, tuple(a.shape), want))
            continue
        problem = _check_values(row.tf_name, a)
        if problem:
            report.invalid.append((row.tf_name, problem))
            continue
        state_dict[row.pt_key] = TRANSFORMS[row.transform](a, shape)
        report.mapped.append(row.tf_name)

    for name in sorted(remaining):
        why = _ignored_reason(names, name)
        if why is None:
            report.unexpected.append((name, tuple(np.shape(remaining[name]))))
        else:
            report.ignored[name] = why

    if not report.ok:
        problems = report.problems()
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise ConversionError(f"{source}: cannot convert: {len(problems)} problem(s):\n  {shown}{more}")
    return state_dict, report
