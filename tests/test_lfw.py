"""The LFW protocol: pairs.txt parsing, path resolution, 10-fold accuracy / VAL@FAR / AUC / EER."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from facenet_tf2pt.models.data.lfw import (ROC_THRESHOLDS, Pair, PairsFormatError, _eer, _threshold_at_far, distance, evaluate,
                        kfold_indices, pairwise_distances, parse_pairs, plot_roc, read_pairs, resolve_pairs,
                        squared_l2_to_angular)


def make_lfw_tree(root, n_sets=10, per_set=20, n_people=40, images_per_person=4, seed=0):
    """A synthetic LFW: root/Name/Name_000k.jpg and a pairs.txt in LFW's format.

    Each set has ``per_set`` same-person lines then ``per_set`` different-person lines, as LFW's."""
    rng = np.random.default_rng(seed)
    names = [f"Person_{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(n_people)]
    for n in names:
        (root / n).mkdir(parents=True)
        for k in range(1, images_per_person + 1):
            Image.new("RGB", (4, 4), (k, 0, 0)).save(root / n / f"{n}_{k:04d}.jpg")
    lines = [f"{n_sets}\t{per_set}"]
    for _ in range(n_sets):
        for _ in range(per_set):
            n = names[rng.integers(n_people)]
            a, b = rng.choice(np.arange(1, images_per_person + 1), 2, replace=False)
            lines.append(f"{n}\t{a}\t{b}")
        for _ in range(per_set):
            i, j = rng.choice(n_people, 2, replace=False)
            lines.append(f"{names[i]}\t{rng.integers(1, images_per_person + 1)}\t"
                         f"{names[j]}\t{rng.integers(1, images_per_person + 1)}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return names


@pytest.fixture(scope="module")
def lfw_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("lfw")
    names = make_lfw_tree(root)
    return root, names


def test_parse_pairs_formats():
    text = "2\t2\nAbel_Pacheco\t1\t4\n\nAbdel_Madi_Shabneh\t1\tDean_Barker\t12\n"
    pairs = parse_pairs(text)
    assert pairs == [Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4), Pair("Abdel_Madi_Shabneh", 1, "Dean_Barker", 12)]
    assert [p.same for p in pairs] == [True, False]
    assert parse_pairs("A 1 2\n") == [Pair("A", 1, "A", 2)]          # no header: fine


@pytest.mark.parametrize("text, match", [
    ("10 300\nA 1\n", r"pairs.txt:2: expected .* got 2 fields"),
    ("10 300\nA 1 B x\n", r"pairs.txt:2: image numbers must be integers"),
    ("10 300\n", r"no pairs found"),
])
def test_parse_pairs_errors_name_file_and_line(text, match):
    with pytest.raises(PairsFormatError, match=match):
        parse_pairs(text, source="pairs.txt")


def test_read_pairs_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_pairs(tmp_path / "nope.txt")


def test_resolve_pairs_paths_png_fallback_and_missing(tmp_path):
    (tmp_path / "Ann").mkdir()
    (tmp_path / "Bo").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "Ann" / "Ann_0001.jpg")
    Image.new("RGB", (2, 2)).save(tmp_path / "Ann" / "Ann_0002.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "Bo" / "Bo_0013.jpg")
    pairs = parse_pairs("3 1\nAnn 1 2\nAnn 1 Bo 13\nAnn 1 Bo 2\n")
    pp = resolve_pairs(tmp_path, pairs)
    assert pp.paths1 == [str(tmp_path / "Ann" / "Ann_0001.jpg")] * 2
    assert pp.paths2 == [str(tmp_path / "Ann" / "Ann_0002.png"), str(tmp_path / "Bo" / "Bo_0013.jpg")]
    assert pp.issame.tolist() == [True, False]
    assert len(pp.missing) == 1 and pp.missing[0][1].endswith("Bo/Bo_0002.jpg")
    assert len(pp.unique_paths) == 3


def test_kfold_matches_sklearn_layout():
    folds = kfold_indices(23, 10)
    sizes = [len(test) for _, test in folds]
    assert sizes == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]                  # first n % k folds one longer
    assert np.concatenate([t for _, t in folds]).tolist() == list(range(23))   # contiguous, in order
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 23
    with pytest.raises(ValueError):
        kfold_indices(5, 10)


def test_distances_hand_values():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [6.0, 8.0]])
    np.testing.assert_allclose(distance(a, b, "squared-l2"), [2.0, 4.0, 0.0, 25.0])
    np.testing.assert_allclose(distance(a, b, "angular"), [0.5, 1.0, 0.0, 0.0], atol=1e-7)
    d = pairwise_distances(a[:3], "squared-l2")
    np.testing.assert_allclose(d, [[0, 0, 0], [0, 0, 0], [0, 0, 0]])
    d = pairwise_distances(np.array([[1.0, 0], [0, 1.0], [-1.0, 0]]))
    np.testing.assert_allclose(d, [[0, 2, 4], [2, 0, 2], [4, 2, 0]])
    assert squared_l2_to_angular(2.0) == pytest.approx(0.5)
    assert squared_l2_to_angular(1.1) == pytest.approx(math.acos(0.45) / math.pi)


def test_eer_and_far_threshold_hand_values():
    # ROC through (0, .5) and (.5, 1): 1 - x = .5 + x at x = .25
    assert _eer(np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0, 1.0])) == pytest.approx(0.25)
    assert _eer(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.5)     # chance
    t = np.array([0.0, 1.0, 2.0, 3.0])
    # FAR 0 up to t=1, 0.004 at t=2: 1e-3 is a quarter of the way from 1 to 2
    assert _threshold_at_far(np.array([0.0, 0.0, 0.004, 0.01]), t, 1e-3) == pytest.approx(1.25)
    assert _threshold_at_far(np.array([0.0, 0.001, 0.001, 0.01]), t, 1e-3) == pytest.approx(2.0)
    assert _threshold_at_far(np.array([0.0, 0.0, 0.0, 0.0]), t, 1e-3) == 0.0       # never reached


def _reference_accuracy(emb1, emb2, issame, n_folds=10):
    """Sandberg's loops, literally: per fold, per threshold, np.less."""
    dist = np.sum(np.square(emb1 - emb2), 1)
    n = len(issame)
    accs, best = [], []
    bounds = np.cumsum([0] + [len(f) for f in np.array_split(np.arange(n), n_folds)])
    for k in range(n_folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(n), test)

        def acc(t, idx):
            pred = np.less(dist[idx], t)
            return float(np.sum(pred == issame[idx])) / len(idx)
        a_train = [acc(t, train) for t in ROC_THRESHOLDS]
        bt = ROC_THRESHOLDS[int(np.argmax(a_train))]
        best.append(bt)
        accs.append(acc(bt, test))
    return np.array(accs), np.array(best)


def _identity_embeddings(names, dim=64, noise=0.05, seed=1):
    rng = np.random.default_rng(seed)
    centers = {n: rng.normal(size=dim) for n in names}

    def embed(path):
        person = path.rsplit("/", 2)[-2]
        v = centers[person] / np.linalg.norm(centers[person]) + noise * rng.normal(size=dim) / math.sqrt(dim)
        return v / np.linalg.norm(v)
    return embed


def test_protocol_on_separable_synthetic_lfw(lfw_tree):
    root, names = lfw_tree
    pairs = read_pairs(root / "pairs.txt")
    assert len(pairs) == 400
    pp = resolve_pairs(root, pairs)
    assert not pp.missing and pp.issame.sum() == 200
    embed = _identity_embeddings(names)
    table = {p: embed(p) for p in pp.unique_paths}
    e1 = np.stack([table[p] for p in pp.paths1])
    e2 = np.stack([table[p] for p in pp.paths2])
    r = evaluate(e1, e2, pp.issame)
    assert r.accuracy == 1.0 and r.accuracy_std == 0.0
    assert r.auc == pytest.approx(1.0) and r.eer == pytest.approx(0.0, abs=1e-9)
    # VAL: every same pair accepted. FAR may exceed 1e-3 here: with 180 different pairs per training
    # set, FAR moves in steps of 1/180 and a held-out different pair can fall below the chosen threshold.
    assert r.val == 1.0 and r.far <= 0.01
    d = distance(e1, e2)
    assert d[pp.issame].max() < r.threshold < d[~pp.issame].min()     # a separating threshold
    assert r.n_pairs == 400 and r.n_same == 200 and r.n_different == 200 and r.n_folds == 10
    json.dumps(r.to_dict(curves=True))
    assert "Accuracy: 1.00000" in r.summary()
    # the same under the angular metric and with the mean subtracted
    r2 = evaluate(e1, e2, pp.issame, metric="angular", subtract_mean=True)
    assert r2.accuracy == 1.0 and r2.auc == pytest.approx(1.0)


def test_protocol_on_random_embeddings_is_chance():
    rng = np.random.default_rng(7)
    n = 3000
    e1 = rng.normal(size=(n, 128))
    e2 = rng.normal(size=(n, 128))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    issame = np.tile(np.r_[np.ones(150, bool), np.zeros(150, bool)], 10)
    r = evaluate(e1, e2, issame)
    # 300 test pairs per fold: the fold mean of 3000 decisions has std ~0.009 around 0.5
    assert 0.45 < r.accuracy < 0.56
    assert 0.45 < r.auc < 0.55 and 0.45 < r.eer < 0.55
    assert r.val < 0.02 and r.far < 0.01


def test_matches_literal_reference_loops():
    rng = np.random.default_rng(3)
    n = 600
    issame = rng.random(n) < 0.5
    base = rng.normal(size=(n, 16))
    e1 = base / np.linalg.norm(base, axis=1, keepdims=True)
    other = np.where(issame[:, None], base + rng.normal(scale=0.9, size=(n, 16)), rng.normal(size=(n, 16)))
    e2 = other / np.linalg.norm(other, axis=1, keepdims=True)
    r = evaluate(e1, e2, issame)
    acc, best = _reference_accuracy(e1, e2, issame)
    np.testing.assert_array_equal(r.fold_accuracies, acc)
    np.testing.assert_array_equal(r.fold_thresholds, best)
    assert 0.6 < r.accuracy < 1.0     # a noisy, non-trivial case


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    e = rng.normal(size=(40, 8))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    r = evaluate(e[:20], e[20:], np.arange(20) % 2 == 0)
    plot_roc(r, tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
