"""Sandberg's Inception-ResNet-V1 inference graph in plain `tf.compat.v1` (no tf-slim), and the
Sandberg-format model directories built from it (the tests' fixtures and the README's example).

Scope, variable and op names follow facenet's `models/inception_resnet_v1.py` as TF-slim lays
them out, so the end-point tensor names in `END_POINT_TENSORS` hold for Sandberg's own frozen
graphs too. BatchNorm and dropout branch on `phase_train` with v1 control flow (Switch/Merge),
as the 2017/2018 graphs do; `phase_train` defaults to False. TensorFlow is imported lazily.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

_FLATTEN = "InceptionResnetV1/Logits/Flatten/flatten/Reshape:0"  # before dropout
BN_EPSILON = 1e-3
L2_EPSILON = 1e-10

# End point -> tensor name(s) in Sandberg's graph. Several candidates where slim's op naming
# differs between TF versions; the first present in a graph is used.
END_POINT_TENSORS = {
    "Conv2d_1a_3x3": ("InceptionResnetV1/Conv2d_1a_3x3/Relu:0",),
    "Conv2d_2a_3x3": ("InceptionResnetV1/Conv2d_2a_3x3/Relu:0",),
    "Conv2d_2b_3x3": ("InceptionResnetV1/Conv2d_2b_3x3/Relu:0",),
    "MaxPool_3a_3x3": ("InceptionResnetV1/MaxPool_3a_3x3/MaxPool:0",),
    "Conv2d_3b_1x1": ("InceptionResnetV1/Conv2d_3b_1x1/Relu:0",),
    "Conv2d_4a_3x3": ("InceptionResnetV1/Conv2d_4a_3x3/Relu:0",),
    "Conv2d_4b_3x3": ("InceptionResnetV1/Conv2d_4b_3x3/Relu:0",),
    "Mixed_5a": ("InceptionResnetV1/Repeat/block35_5/Relu:0",),
    "Mixed_6a": ("InceptionResnetV1/Mixed_6a/concat:0",),
    "Mixed_6b": ("InceptionResnetV1/Repeat_1/block17_10/Relu:0",),
    "Mixed_7a": ("InceptionResnetV1/Mixed_7a/concat:0",),
    "Mixed_8a": ("InceptionResnetV1/Repeat_2/block8_5/Relu:0",),
    "Mixed_8b": ("InceptionResnetV1/Block8/add:0",),
    "PreLogitsFlatten": ("InceptionResnetV1/Logits/Dropout/cond/Merge:0",
                         "InceptionResnetV1/Logits/Flatten/flatten/Reshape:0"),
    "embeddings": ("embeddings:0",),
}


def import_tf():
    """Import TensorFlow quietly, or raise a ConversionError saying how to install it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        from ..models.common.install import install_hint

        raise ConversionError(f"this step needs TensorFlow, which is not installed: {install_hint('tf')} ({e})") from e
    tf.get_logger().setLevel("ERROR")  # TF1 API deprecation notices are expected here
    return tf


@contextlib.contextmanager
def _v1_control_flow(tf):
    """Build conds as Switch/Merge, like the TF1 graphs Sandberg released."""
    was_v2 = tf.compat.v1.control_flow_v2_enabled()
    tf.compat.v1.disable_control_flow_v2()
    try:
        yield
    finally:
        if was_v2:
            tf.compat.v1.enable_control_flow_v2()


class _Builder:
    """Creates the graph's variables from a value source and records BN batch moments."""

    def __init__(self, tf, phase_train, dtype):
        self.tf = tf
        self.dtype = dtype
        self.v1 = tf.compat.v1
        self.phase_train = phase_train
        self.kinds = {}                   # variable name -> kind ('weights', 'beta', ...)
        self.batch_moments = {}           # BatchNorm scope -> (mean, variance) tensors used

    def variable(self, name, shape, kind):
        # Zeros initializer: values are loaded into the session afterwards, which keeps them
        # out of the graph (and so out of the .meta file).
        v = self.v1.get_variable(name, shape=shape, dtype=self.dtype, use_resource=False,
                                 initializer=self.v1.zeros_initializer(), trainable=True)
        self.kinds[v.op.name] = kind
        return v

    def batch_norm(self, x, axes):
        tf, v1 = self.tf, self.v1
        depth = int(x.shape[-1])
        with v1.variable_scope("BatchNorm"):
            beta = self.variable("beta", [depth], "beta")
            moving_mean = self.variable("moving_mean", [depth], "moving_mean")
            moving_variance = self.variable("moving_variance", [depth], "moving_variance")
            scope = v1.get_variable_scope().name

            mean, var = tf.cond(self.phase_train, lambda: tf.nn.moments(x, axes),
                                lambda: (moving_mean, moving_variance))
            self.batch_moments[scope] = (mean, var)  # the batch moments when phase_train is fed True
            return tf.nn.batch_normalization(x, mean, var, beta, None, BN_EPSILON)

    def conv(self, x, filters, kernel, stride=1, padding="SAME", scope=None, bn=True):
        """slim.conv2d: weights (+ BatchNorm and ReLU, or biases and no activation)."""
        tf, v1 = self.tf, self.v1
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        with v1.variable_scope(scope):
            w = self.variable("weights", [kh, kw, int(x.shape[-1]), filters], "weights")
            y = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding, name="Conv2D")
            if not bn:
                b = self.variable("biases", [filters], "biases")
                return tf.nn.bias_add(y, b, name="BiasAdd")
            return tf.nn.relu(self.batch_norm(y, [0, 1, 2]), name="Relu")

    # --- Sandberg's blocks -------------------------------------------------------------
    def _residual(self, x, branches, scale, relu):
        tf = self.tf
        mixed = tf.concat(branches, 3)
        up = self.conv(mixed, int(x.shape[-1]), 1, scope="Conv2d_1x1", bn=False)
        net = tf.add(x, scale * up, name="add")
        return tf.nn.relu(net, name="Relu") if relu else net

    def block35(self, x, scale=0.17, relu=True):
        v1 = self.v1
        with v1.variable_scope("Branch_0"):
            b0 = self.conv(x, 32, 1, scope="Conv2d_1x1")
        with v1.variable_scope("Branch_1"):
            b1 = self.conv(x, 32, 1, scope="Conv2d_0a_1x1")
            b1 = self.conv(b1, 32, 3, scope="Conv2d_0b_3x3")
        with v1.variable_scope("Branch_2"):
            b2 = self.conv(x, 32, 1, scope="Conv2d_0a_1x1")
            b2 = self.conv(b2, 32, 3, scope="Conv2d_0b_3x3")
            b2 = self.conv(b2, 32, 3, scope="Conv2d_0c_3x3")
        return self._residual(x, [b0, b1, b2], scale, relu)

    def block17(self, x, scale=0.10, relu=True):
        v1 = self.v1
        with v1.variable_scope("Branch_0"):
            b0 = self.conv(x, 128, 1, scope="Conv2d_1x1")
        with v1.variable_scope("Branch_1"):
            b1 = self.conv(x, 128, 1, scope="Conv2d_0a_1x1")
            b1 = self.conv(b1, 128, (1, 7), scope="Conv2d_0b_1x7")
            b1 = self.conv(b1, 128, (7, 1), scope="Conv2d_0c_7x1")
        return self._residual(x, [b0, b1], scale, relu)

    def block8(self, x, scale=0.20, relu=True):
        v1 = self.v1
        with v1.variable_scope("Branch_0"):
            b0 = self.conv(x, 192, 1, scope="Conv2d_1x1")
        with v1.variable_scope("Branch_1"):
            b1 = self.conv(x, 192, 1, scope="Conv2d_0a_1x1")
            b1 = self.conv(b1, 192, (1, 3), scope="Conv2d_0b_1x3")
            b1 = self.conv(b1, 192, (3, 1), scope="Conv2d_0c_3x1")
        return self._residual(x, [b0, b1], scale, relu)

    def repeat(self, x, n, block, scope, **kw):
        with self.v1.variable_scope(scope):
            for i in range(1, n + 1):
                with self.v1.variable_scope(f"{block.__name__}_{i}"):
                    x = block(x, **kw)
        return x

    def reduction_a(self, x):  # Mixed_6a
        v1, tf = self.v1, self.tf
        with v1.variable_scope("Branch_0"):
            b0 = self.conv(x, 384, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_1"):
            b1 = self.conv(x, 192, 1, scope="Conv2d_0a_1x1")
            b1 = self.conv(b1, 192, 3, scope="Conv2d_0b_3x3")
            b1 = self.conv(b1, 256, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_2"):
            b2 = tf.nn.max_pool2d(x, 3, 2, "VALID", name="MaxPool_1a_3x3")
        return tf.concat([b0, b1, b2], 3)

    def reduction_b(self, x):  # Mixed_7a
        v1, tf = self.v1, self.tf
        with v1.variable_scope("Branch_0"):
            b0 = self.conv(x, 256, 1, scope="Conv2d_0a_1x1")
            b0 = self.conv(b0, 384, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_1"):
            b1 = self.conv(x, 256, 1, scope="Conv2d_0a_1x1")
            b1 = self.conv(b1, 256, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_2"):
            b2 = self.conv(x, 256, 1, scope="Conv2d_0a_1x1")
            b2 = self.conv(b2, 256, 3, scope="Conv2d_0b_3x3")
            b2 = self.conv(b2, 256, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        with v1.variable_scope("Branch_3"):
            b3 = tf.nn.max_pool2d(x, 3, 2, "VALID", name="MaxPool_1a_3x3")
        return tf.concat([b0, b1, b2, b3], 3)

    def inception_resnet_v1(self, images, embedding_size, keep_prob=0.8):
        """Returns (end_points, prelogits) like Sandberg's inference()."""
        tf, v1 = self.tf, self.v1
        ep = {}
        with v1.variable_scope("InceptionResnetV1"):
            net = self.conv(images, 32, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            ep["Conv2d_1a_3x3"] = net
            net = self.conv(net, 32, 3, padding="VALID", scope="Conv2d_2a_3x3")
            ep["Conv2d_2a_3x3"] = net
            net = self.conv(net, 64, 3, scope="Conv2d_2b_3x3")
            ep["Conv2d_2b_3x3"] = net
            with v1.variable_scope("MaxPool_3a_3x3"):
                net = tf.nn.max_pool2d(net, 3, 2, "VALID", name="MaxPool")
            ep["MaxPool_3a_3x3"] = net
            net = self.conv(net, 80, 1, padding="VALID", scope="Conv2d_3b_1x1")
            ep["Conv2d_3b_1x1"] = net
            net = self.conv(net, 192, 3, padding="VALID", scope="Conv2d_4a_3x3")
            ep["Conv2d_4a_3x3"] = net
            net = self.conv(net, 256, 3, stride=2, padding="VALID", scope="Conv2d_4b_3x3")
            ep["Conv2d_4b_3x3"] = net
            ep["Mixed_5a"] = net = self.repeat(net, 5, self.block35, "Repeat", scale=0.17)
            with v1.variable_scope("Mixed_6a"):
                ep["Mixed_6a"] = net = self.reduction_a(net)
            ep["Mixed_6b"] = net = self.repeat(net, 10, self.block17, "Repeat_1", scale=0.10)
            with v1.variable_scope("Mixed_7a"):
                ep["Mixed_7a"] = net = self.reduction_b(net)
            ep["Mixed_8a"] = net = self.repeat(net, 5, self.block8, "Repeat_2", scale=0.20)
            with v1.variable_scope("Block8"):
                ep["Mixed_8b"] = net = self.block8(net, scale=1.0, relu=False)
            with v1.variable_scope("Logits"):
                with v1.variable_scope("AvgPool_1a_8x8"):
                    net = tf.nn.avg_pool2d(net, net.shape[1:3], 1, "VALID", name="AvgPool")
                with v1.variable_scope("Flatten"):
                    net = tf.reshape(net, [-1, int(net.shape[-1])], name="flatten/Reshape")
                with v1.variable_scope("Dropout"):
                    net = tf.cond(self.phase_train, lambda: tf.nn.dropout(net, rate=1 - keep_prob),
                                  lambda: tf.identity(net))
                ep["PreLogitsFlatten"] = net
            with v1.variable_scope("Bottleneck"):
                w = self.variable("weights", [int(net.shape[-1]), embedding_size], "weights")
                prelogits = self.batch_norm(tf.matmul(net, w, name="MatMul"), [0])
        return ep, prelogits


@dataclass
class InferenceGraph:
    """Handles of one built graph."""
    graph: object
    images: object
    phase_train: object
    embeddings: object
    end_points: dict
    logits: object | None
    batch_moments: dict
    variable_kinds: dict


def build_inference_graph(embedding_size: int, num_classes: int | None,
                          image_size: int = 160, dtype: str = "float32") -> InferenceGraph:
    """A new tf.Graph holding Sandberg's inference graph: `input:0` (N,160,160,3 float32),
    `phase_train:0` (bool, default False), `embeddings:0`, and `Logits` when num_classes is set.
    Variables start at zero: restore a checkpoint or load values into the session."""
    tf = import_tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), _v1_control_flow(tf):
        images = v1.placeholder(dtype, [None, image_size, image_size, 3], name="input")
        phase_train = v1.placeholder_with_default(False, [], name="phase_train")
        b = _Builder(tf, phase_train, dtype)
        end_points, prelogits = b.inception_resnet_v1(images, embedding_size)
        logits = None
        if num_classes is not None:
            with v1.variable_scope("Logits"):
                w = b.variable("weights", [embedding_size, num_classes], "weights")
                bias = b.variable("biases", [num_classes], "biases")
                logits = tf.nn.bias_add(tf.matmul(prelogits, w), bias, name="BiasAdd")
        embeddings = tf.nn.l2_normalize(prelogits, 1, L2_EPSILON, name="embeddings")
        end_points["embeddings"] = embeddings
    return InferenceGraph(graph, images, phase_train, embeddings, end_points, logits, b.batch_moments,
                          b.kinds)


# --- fixtures ---------------------------------------------------------------------------------

def _random_value(seed: int, name: str, shape: tuple, kind: str) -> np.ndarray:
    """Deterministic, non-trivial values: He-scaled weights, random betas and biases; BN
    statistics at 0/1 until calibration replaces them. One generator per variable, keyed by
    its name, so values don't depend on build order."""
    rng = np.random.default_rng([seed, *name.encode()])
    if kind == "weights":
        fan_in = int(np.prod(shape[:-1]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if kind in ("beta", "biases"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if kind == "moving_mean":
        return np.zeros(shape, np.float32)
    if kind == "moving_variance":
        return np.ones(shape, np.float32)
    raise AssertionError(f"unknown variable kind {kind!r}")


@dataclass
class Fixture:
    directory: Path
    name: str
    checkpoint_prefix: Path
    meta_graph: Path
    frozen_graph: Path
    embedding_size: int
    num_classes: int | None


def _calibrated_bn_statistics(embedding_size, num_classes, values, seed) -> dict[str, np.ndarray]:
    """BN moving statistics near the real batch moments, so activations stay in a realistic
    range through all 21 residual blocks: the moments of a seeded random batch, times seeded
    random factors. Computed in float64, so the float32 values (and the fixture's bytes) do not
    depend on the CPU's float32 summation order."""
    tf = import_tf()
    v1 = tf.compat.v1
    g = build_inference_graph(embedding_size, num_classes, dtype="float64")
    calib = np.random.default_rng(seed + 1).uniform(-1, 1, (8, 160, 160, 3))
    with g.graph.as_default(), _v1_control_flow(tf):
        variables = {v.op.name: v for v in v1.trainable_variables()}
        with v1.Session() as sess:
            sess.run([v.initializer for v in variables.values()],
                     {v.initial_value: values[n].astype(np.float64) for n, v in variables.items()})
            # With phase_train=True every BN normalizes by its batch moments, so one run gives
            # each layer's statistics as they are when all layers before it are normalized too.
            # Dropout would make the Bottleneck's moments random: a second run feeds the
            # undropped features in its place.
            moments, flat = sess.run((g.batch_moments, g.graph.get_tensor_by_name(_FLATTEN)),
                                     {g.images: calib, g.phase_train: True})
            head = {k: t for k, t in g.batch_moments.items() if k.endswith("Bottleneck/BatchNorm")}
            moments.update(sess.run(head, {g.end_points["PreLogitsFlatten"]: flat, g.phase_train: True}))
    stats = {}
    for scope, (mean, var) in sorted(moments.items()):
        noise = np.random.default_rng([seed, 7, *scope.encode()])
        stats[f"{scope}/moving_mean"] = (mean + noise.standard_normal(mean.shape) * 0.05 * np.sqrt(var))
        stats[f"{scope}/moving_variance"] = var * noise.uniform(0.8, 1.25, var.shape)
    return {n: v.astype(np.float32) for n, v in stats.items()}


def write_fixture(out_dir, *, embedding_size: int = 512, num_classes: int | None = 17, seed: int = 0,
                  name: str | None = None, step: int = 1000) -> Fixture:
    """Write a Sandberg-format model directory with random but realistic weights:
    `model-<name>.meta`, `model-<name>.ckpt-<step>.{index,data-00000-of-00001}`, `checkpoint`,
    and the frozen `<name>.pb` (inputs `input:0`, `phase_train:0`; output `embeddings:0`).
    The same arguments give the same variable values, on any machine.
    """
    tf = import_tf()
    v1 = tf.compat.v1
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"fixture-{embedding_size}d-seed{seed}"
    g = build_inference_graph(embedding_size, num_classes)
    with g.graph.as_default(), _v1_control_flow(tf):
        variables = {v.op.name: v for v in v1.trainable_variables()}
        values = {n: _random_value(seed, n, tuple(v.shape), g.variable_kinds[n]) for n, v in variables.items()}
        values.update(_calibrated_bn_statistics(embedding_size, num_classes, values, seed))
        saver = v1.train.Saver(v1.trainable_variables(), save_relative_paths=True)
        with v1.Session() as sess:
            sess.run([v.initializer for v in variables.values()],
                     {v.initial_value: values[n] for n, v in variables.items()})
            prefix = out_dir / f"model-{name}.ckpt"
            saver.save(sess, str(prefix), global_step=step, write_meta_graph=False)
            saver.export_meta_graph(str(out_dir / f"model-{name}.meta"))
            frozen = v1.graph_util.convert_variables_to_constants(
                sess, g.graph.as_graph_def(), ["embeddings"])
    pb = out_dir / f"{name}.pb"
    from .writer import atomic_write_bytes

    atomic_write_bytes(pb, frozen.SerializeToString(deterministic=True))
    return Fixture(out_dir, name, Path(f"{prefix}-{step}"), out_dir / f"model-{name}.meta", pb,
                   embedding_size, num_classes)


def save_checkpoint(prefix, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` as a TF V2 checkpoint at `prefix` (`.index` + one data shard) with
    TensorFlow's own SaveV2 op: for building variants of a checkpoint (tests, repairs)."""
    tf = import_tf()
    names = sorted(arrays)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(arrays[n]) for n in names])
    return Path(prefix)
