"""The mapping table covers both sides exactly once."""
from collections import Counter

import pytest

from facenet_tf2pt.converter.mapping import TF_SHAPE_FOR, TRANSFORMS, ignored_reason, inception_resnet_v1_table
from facenet_tf2pt.models import InceptionResNetV1


@pytest.mark.parametrize("with_logits", [False, True])
def test_table_covers_every_pytorch_key_once(with_logits):
    table = inception_resnet_v1_table(with_logits)
    model = InceptionResNetV1(num_classes=17 if with_logits else None)
    keys = Counter(r.pt_key for r in table)
    assert max(keys.values()) == 1
    assert set(keys) == set(model.state_dict())


def test_table_covers_every_sandberg_variable_once(fixture512, fixture512_arrays):
    table = inception_resnet_v1_table(with_logits=True)
    tf_names = Counter(r.tf_name for r in table if r.tf_name is not None)
    assert max(tf_names.values()) == 1
    assert set(tf_names) == set(fixture512_arrays)
    assert len(tf_names) == 492  # docs/reference.md: 492 variables with Logits


def test_logits_rows_are_optional():
    with_l = {r.tf_name for r in inception_resnet_v1_table(True)}
    without = {r.tf_name for r in inception_resnet_v1_table(False)}
    assert with_l - without == {"Logits/weights", "Logits/biases"}


def test_every_row_names_a_known_transform():
    for row in inception_resnet_v1_table(True):
        assert row.transform in TRANSFORMS
        assert (row.tf_name is None) == (row.transform not in TF_SHAPE_FOR)


@pytest.mark.parametrize("name,ignored", [
    ("global_step", True), ("InceptionResnetV1/Conv2d_1a_3x3/weights/Adam_1", True),
    ("centers", True), ("InceptionResnetV1/Conv2d_1a_3x3/weights/ExponentialMovingAverage", True),
    ("beta1_power", True), ("InceptionResnetV1/Conv2d_1a_3x3/weights", False),
    ("my_global_step_copy", False), ("centers_extra", False),
])
def test_ignore_patterns_are_anchored(name, ignored):
    assert (ignored_reason(name) is not None) == ignored
