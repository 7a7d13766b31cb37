"""The LFW verification protocol as David Sandberg's facenet evaluates it (src/lfw.py, facenet.py).

- ``pairs.txt``: a header line (``10 300``: sets and pairs per set), then one pair per line:
  ``name n1 n2`` (same person) or ``name1 n1 name2 n2`` (different people); images are
  ``LFW_DIR/name/name_%04d.jpg`` (or ``.png``). Pairs with a missing image are skipped.
- Distances: ``squared-l2`` (``sum((a - b)**2)``, Sandberg's ``distance_metric=0``) or
  ``angular`` (``arccos(cos_sim) / pi``, his ``distance_metric=1``); optionally after subtracting
  the mean embedding of the training folds (``subtract_mean``).
- 10 contiguous folds over the pairs in file order (scikit-learn ``KFold(shuffle=False)``).
  Accuracy: for each fold, the threshold from ``arange(0, 4, 0.01)`` that maximizes accuracy on
  the other 9 folds, applied to the held-out fold; reported as mean ± std over folds.
  A pair is predicted "same" when ``distance < threshold``.
- ROC: TPR/FPR on each test fold at every threshold, averaged over folds; AUC is the trapezoid
  area under it; EER is where ``FPR = 1 - TPR`` on the piecewise-linear curve.
- VAL @ FAR: for each fold, the threshold from ``arange(0, 4, 0.001)`` at which the training
  folds' FAR equals the target (linear interpolation between the bracketing thresholds; 0 when
  FAR never reaches it), then VAL and FAR on the test fold; VAL mean ± std, FAR mean.

Pure numpy: no torch needed. ``plot_roc`` imports matplotlib only when called.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..common.atomic_io import atomic_write_bytes
from ..common.paths import PathError, check_output, read_capped

METRICS = ("squared-l2", "angular")
MAX_PAIRS_BYTES = 16 << 20     # LFW's pairs.txt is 0.1 MB
ROC_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


class PairsFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Pair:
    name1: str
    num1: int
    name2: str
    num2: int

    @property
    def same(self) -> bool:
        return self.name1 == self.name2


def parse_pairs(text: str, source: str = "<pairs>") -> list[Pair]:
    """Parse pairs.txt content. A first line of one or two integers (``10 300``) is the header."""
    pairs: list[Pair] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if lineno == 1 and len(fields) <= 2 and all(f.isdigit() for f in fields):
            continue   # header: number of sets, pairs per set
        try:
            if len(fields) == 3:
                pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2])))
            elif len(fields) == 4:
                pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3])))
            else:
                raise PairsFormatError(f"{source}:{lineno}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                                       f"got {len(fields)} fields: {line.strip()!r}")
        except ValueError as e:
            if isinstance(e, PairsFormatError):
                raise
            raise PairsFormatError(f"{source}:{lineno}: image numbers must be integers: {line.strip()!r}") from None
    if not pairs:
        raise PairsFormatError(f"{source}: no pairs found")
    return pairs


def read_pairs(path) -> list[Pair]:
    path = Path(path)
    try:
        text = read_capped(path, MAX_PAIRS_BYTES, "pairs file").decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such pairs file") from None
    except PathError as e:
        raise PairsFormatError(str(e)) from None
    except UnicodeDecodeError:
        raise PairsFormatError(f"{path}: not a text file") from None
    return parse_pairs(text, source=str(path))


def image_path(lfw_dir, name: str, num: int, extensions=("jpg", "png")) -> str | None:
    """``lfw_dir/name/name_0001.jpg`` (first extension that exists), or None."""
    base = os.path.join(str(lfw_dir), name, f"{name}_{num:04d}")
    for ext in extensions:
        if os.path.exists(f"{base}.{ext}"):
            return f"{base}.{ext}"
    return None


@dataclass
class PairPaths:
    paths1: list[str]
    paths2: list[str]
    issame: np.ndarray                      # bool, one per kept pair
    missing: list[tuple[Pair, str]] = field(default_factory=list)   # (pair, the missing image's base path)

    @property
    def unique_paths(self) -> list[str]:
        return sorted(set(self.paths1) | set(self.paths2))


def resolve_pairs(lfw_dir, pairs: list[Pair], extensions=("jpg", "png")) -> PairPaths:
    """Image paths of each pair; a pair with a missing image is dropped (listed in ``missing``)."""
    p1, p2, same, missing = [], [], [], []
    for pair in pairs:
        a = image_path(lfw_dir, pair.name1, pair.num1, extensions)
        b = image_path(lfw_dir, pair.name2, pair.num2, extensions)
        if a is None or b is None:
            name, num = (pair.name1, pair.num1) if a is None else (pair.name2, pair.num2)
            missing.append((pair, os.path.join(str(lfw_dir), name, f"{name}_{num:04d}.{extensions[0]}")))
            continue
        p1.append(a)
        p2.append(b)
        same.append(pair.same)
    return PairPaths(p1, p2, np.asarray(same, dtype=bool), missing)


def distance(emb1: np.ndarray, emb2: np.ndarray, metric: str = "squared-l2") -> np.ndarray:
    """Row-wise distance between two (N, D) arrays."""
    emb1 = np.asarray(emb1, dtype=np.float64)
    emb2 = np.asarray(emb2, dtype=np.float64)
    if metric == "squared-l2":
        return np.sum(np.square(emb1 - emb2), axis=1)
    if metric == "angular":
        dot = np.sum(emb1 * emb2, axis=1)
        norm = np.linalg.norm(emb1, axis=1) * np.linalg.norm(emb2, axis=1)
        cos = np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)
        return np.arccos(np.clip(cos, -1.0, 1.0)) / math.pi
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def pairwise_distances(emb: np.ndarray, metric: str = "squared-l2") -> np.ndarray:
    """(N, N) distance matrix of one set of embeddings."""
    emb = np.asarray(emb, dtype=np.float64)
    n = len(emb)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = distance(emb[i.ravel()], emb[j.ravel()], metric).reshape(n, n)
    np.fill_diagonal(d, 0.0)
    return d


def squared_l2_to_angular(t: float) -> float:
    """The angular distance equal to squared-L2 distance ``t`` between unit vectors
    (``|a - b|^2 = 2 - 2 cos``)."""
    return float(np.arccos(np.clip(1.0 - t / 2.0, -1.0, 1.0)) / math.pi)


def kfold_indices(n: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays: contiguous folds, the first ``n % n_folds`` one longer
    (scikit-learn's ``KFold(shuffle=False)``)."""
    if n_folds < 2 or n < n_folds:
        raise ValueError(f"need at least 2 folds and n_folds <= pairs; got {n_folds} folds for {n} pairs")
    idx = np.arange(n)
    folds = np.array_split(idx, n_folds)
    return [(np.setdiff1d(idx, test, assume_unique=True), test) for test in folds]


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray):
    """TPR, FPR and accuracy at each threshold, predicting "same" when ``dist < t``.

    Counts via sorted distances (``searchsorted(..., side='left')`` counts ``d < t``): the same
    numbers as comparing every pair with every threshold, in O((N + T) log N).
    """
    d_same = np.sort(dist[issame])
    d_diff = np.sort(dist[~issame])
    tp = np.searchsorted(d_same, thresholds, side="left")
    fp = np.searchsorted(d_diff, thresholds, side="left")
    n_same, n_diff = len(d_same), len(d_diff)
    tn = n_diff - fp
    tpr = tp / n_same if n_same else np.zeros(len(thresholds))
    fpr = fp / n_diff if n_diff else np.zeros(len(thresholds))
    acc = (tp + tn) / dist.size
    return tpr, fpr, acc


def _threshold_at_far(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """The threshold where the (non-decreasing) FAR curve reaches ``target``, interpolating
    linearly between the last threshold at or below it and the next one; 0 if never reached."""
    if far.max() < target:
        return 0.0
    lo = int(np.nonzero(far <= target)[0][-1]) if np.any(far <= target) else 0
    if far[lo] == target or lo + 1 >= len(far):
        return float(thresholds[lo])
    hi = lo + 1
    f = (target - far[lo]) / (far[hi] - far[lo])
    return float(thresholds[lo] + f * (thresholds[hi] - thresholds[lo]))


_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")


def _eer(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Where FPR = 1 - TPR on the piecewise-linear ROC (ends extended to (0,0) and (1,1))."""
    x = np.concatenate([[0.0], fpr, [1.0]])
    y = np.concatenate([[0.0], tpr, [1.0]])
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    h = x + y - 1.0
    for i in range(len(h) - 1):
        if h[i] <= 0.0 <= h[i + 1]:
            if h[i + 1] == h[i]:
                return float(x[i])
            t = -h[i] / (h[i + 1] - h[i])
            return float(x[i] + t * (x[i + 1] - x[i]))
    return float("nan")


@dataclass
class LFWResult:
    accuracy: float                 # mean over folds
    accuracy_std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray     # the threshold each fold used (chosen on its training folds)
    threshold: float                # mean of fold_thresholds: a calibrated default for `compare`
    val: float                      # VAL (TAR) at the target FAR, mean over folds
    val_std: float
    far: float                      # the FAR actually reached on the test folds, mean
    far_target: float
    auc: float
    eer: float
    tpr: np.ndarray                 # ROC, averaged over folds, at roc_thresholds
    fpr: np.ndarray
    roc_thresholds: np.ndarray
    metric: str
    n_folds: int
    n_pairs: int
    n_same: int
    n_different: int
    subtract_mean: bool = False
    skipped_pairs: int = 0

    def summary(self) -> str:
        return "\n".join([
            f"pairs: {self.n_pairs} ({self.n_same} same, {self.n_different} different), "
            f"{self.skipped_pairs} skipped; {self.n_folds} folds; metric {self.metric}"
            + (", mean subtracted" if self.subtract_mean else ""),
            f"Accuracy: {self.accuracy:.5f} +- {self.accuracy_std:.5f}",
            f"Threshold (mean over folds, same if distance < t): {self.threshold:.3f}",
            f"Validation rate: {self.val:.5f} +- {self.val_std:.5f} @ FAR={self.far:.5f} "
            f"(target {self.far_target:g})",
            f"Area Under Curve (AUC): {self.auc:.4f}",
            f"Equal Error Rate (EER): {self.eer:.4f}",
        ])

    def to_dict(self, curves: bool = False) -> dict:
        d = asdict(self)
        for k in ("tpr", "fpr", "roc_thresholds"):
            if curves:
                d[k] = d[k].tolist()
            else:
                d.pop(k)
        d["fold_accuracies"] = self.fold_accuracies.tolist()
        d["fold_thresholds"] = self.fold_thresholds.tolist()
        return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in d.items()}


def evaluate(emb1: np.ndarray, emb2: np.ndarray, issame, n_folds: int = 10, metric: str = "squared-l2",
             subtract_mean: bool = False, far_target: float = 1e-3, skipped_pairs: int = 0) -> LFWResult:
    """Sandberg's LFW protocol on pair embeddings ``emb1[i]``, ``emb2[i]`` with labels ``issame[i]``."""
    emb1 = np.asarray(emb1, dtype=np.float64)
    emb2 = np.asarray(emb2, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if emb1.shape != emb2.shape or emb1.ndim != 2 or len(issame) != len(emb1):
        raise ValueError(f"need two (N, D) arrays and N labels; got {emb1.shape}, {emb2.shape}, {issame.shape}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    n = len(issame)
    folds = kfold_indices(n, n_folds)
    tprs = np.zeros((n_folds, len(ROC_THRESHOLDS)))
    fprs = np.zeros_like(tprs)
    acc = np.zeros(n_folds)
    best = np.zeros(n_folds)
    vals = np.zeros(n_folds)
    fars = np.zeros(n_folds)
    for k, (train, test) in enumerate(folds):
        if subtract_mean:
            mean = np.mean(np.concatenate([emb1[train], emb2[train]]), axis=0)
        else:
            mean = 0.0
        dist = distance(emb1 - mean, emb2 - mean, metric)
        # accuracy: best threshold on the training folds
        _, _, acc_train = _rates(dist[train], issame[train], ROC_THRESHOLDS)
        best_t = ROC_THRESHOLDS[int(np.argmax(acc_train))]
        tprs[k], fprs[k], _ = _rates(dist[test], issame[test], ROC_THRESHOLDS)
        _, _, a = _rates(dist[test], issame[test], np.array([best_t]))
        acc[k], best[k] = a[0], best_t
        # VAL @ FAR: threshold where the training FAR hits the target
        _, far_train, _ = _rates(dist[train], issame[train], VAL_THRESHOLDS)
        t = _threshold_at_far(far_train, VAL_THRESHOLDS, far_target)
        v, f, _ = _rates(dist[test], issame[test], np.array([t]))
        vals[k], fars[k] = v[0], f[0]
    tpr, fpr = tprs.mean(axis=0), fprs.mean(axis=0)
    return LFWResult(
        accuracy=float(acc.mean()), accuracy_std=float(acc.std()), fold_accuracies=acc,
        fold_thresholds=best, threshold=float(best.mean()),
        val=float(vals.mean()), val_std=float(vals.std()), far=float(fars.mean()), far_target=far_target,
        auc=float(_trapezoid(tpr, fpr)), eer=_eer(fpr, tpr),
        tpr=tpr, fpr=fpr, roc_thresholds=ROC_THRESHOLDS.copy(), metric=metric, n_folds=n_folds,
        n_pairs=n, n_same=int(issame.sum()), n_different=int((~issame).sum()),
        subtract_mean=subtract_mean, skipped_pairs=skipped_pairs,
    )


def plot_roc(result: LFWResult, path, title: str | None = None) -> None:
    """Write the ROC curve (averaged over folds) to a PNG, atomically. Needs matplotlib."""
    check_output(path, (".png",))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting the ROC needs matplotlib: pip install matplotlib") from e
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot(result.fpr, result.tpr, lw=1.5, label=f"AUC {result.auc:.4f}, EER {result.eer:.4f}")
    ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title or f"LFW ROC: accuracy {result.accuracy:.4f} +- {result.accuracy_std:.4f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())   # never a cut-off PNG over a good one
