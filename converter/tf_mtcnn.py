"""P-Net, R-Net and O-Net in plain ``tf.compat.v1``, with the layer semantics of Sandberg's
``align/detect_face.py``: variables named ``<net>/<layer>/{weights,biases,alpha}``, VALID convs
with bias and no activation, PReLU as ``relu(x) - alpha * relu(-x)``, TF ``SAME``/``VALID`` max
pools, dense layers that flatten NHWC maps, a max-shifted softmax. As in the original pipeline the
nets see images transposed (N, W, H, C) -- the Caffe layout of the weights.

Used as the reference side of ``verify-mtcnn``. TensorFlow is imported inside the functions.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

# (op, args) per layer, in order; "branch" outputs name the layer whose output they read
_PNET = [
    ("conv", "conv1", dict(k=3, c_o=10)),
    ("prelu", "PReLU1", {}),
    ("pool", "pool1", dict(k=2, s=2, padding="SAME")),
    ("conv", "conv2", dict(k=3, c_o=16)),
    ("prelu", "PReLU2", {}),
    ("conv", "conv3", dict(k=3, c_o=32)),
    ("prelu", "PReLU3", {}),
]
_RNET = [
    ("conv", "conv1", dict(k=3, c_o=28)),
    ("prelu", "prelu1", {}),
    ("pool", "pool1", dict(k=3, s=2, padding="SAME")),
    ("conv", "conv2", dict(k=3, c_o=48)),
    ("prelu", "prelu2", {}),
    ("pool", "pool2", dict(k=3, s=2, padding="VALID")),
    ("conv", "conv3", dict(k=2, c_o=64)),
    ("prelu", "prelu3", {}),
    ("fc", "conv4", dict(c_o=128)),
    ("prelu", "prelu4", {}),
]
_ONET = [
    ("conv", "conv1", dict(k=3, c_o=32)),
    ("prelu", "prelu1", {}),
    ("pool", "pool1", dict(k=3, s=2, padding="SAME")),
    ("conv", "conv2", dict(k=3, c_o=64)),
    ("prelu", "prelu2", {}),
    ("pool", "pool2", dict(k=3, s=2, padding="VALID")),
    ("conv", "conv3", dict(k=3, c_o=64)),
    ("prelu", "prelu3", {}),
    ("pool", "pool3", dict(k=2, s=2, padding="SAME")),
    ("conv", "conv4", dict(k=2, c_o=128)),
    ("prelu", "prelu4", {}),
    ("fc", "conv5", dict(c_o=256)),
    ("prelu", "prelu5", {}),
]
# heads: (layer name, kind, outputs, softmax?) -- in the PyTorch nets' output order
_HEADS = {
    "pnet": [("conv4-2", "conv", 4, False), ("conv4-1", "conv", 2, True)],
    "rnet": [("conv5-2", "fc", 4, False), ("conv5-1", "fc", 2, True)],
    "onet": [("conv6-2", "fc", 4, False), ("conv6-3", "fc", 10, False), ("conv6-1", "fc", 2, True)],
}
_TRUNKS = {"pnet": _PNET, "rnet": _RNET, "onet": _ONET}
INPUT_SIZE = {"pnet": None, "rnet": 24, "onet": 48}


def _tf():
    try:
        import tensorflow as tf  # lazy: only the converter's verification needs it
    except ImportError as e:
        from .errors import ConversionError

        raise ConversionError(f"TensorFlow is needed for this step ({e}); install the 'tf' extra") from e
    return tf.compat.v1


def _var(tf1, name: str, value: np.ndarray):
    return tf1.get_variable(
        name, shape=value.shape, dtype=tf1.float32, initializer=tf1.constant_initializer(value)
    )


def _softmax(tf1, x, axis):
    shifted = tf1.exp(x - tf1.reduce_max(x, axis, keepdims=True))
    return shifted / tf1.reduce_sum(shifted, axis, keepdims=True)


def _apply(tf1, op: str, name: str, x, layer_params: Mapping[str, np.ndarray], args: dict):
    with tf1.variable_scope(name):
        if op == "conv":
            w = _var(tf1, "weights", layer_params["weights"])
            b = _var(tf1, "biases", layer_params["biases"])
            return tf1.nn.bias_add(tf1.nn.conv2d(x, w, [1, 1, 1, 1], padding="VALID"), b)
        if op == "prelu":
            alpha = _var(tf1, "alpha", layer_params["alpha"])
            return tf1.nn.relu(x) + tf1.multiply(alpha, -tf1.nn.relu(-x))
        if op == "fc":
            if x.shape.ndims == 4:
                dim = int(np.prod(x.shape.as_list()[1:]))
                x = tf1.reshape(x, [-1, dim])
            w = _var(tf1, "weights", layer_params["weights"])
            b = _var(tf1, "biases", layer_params["biases"])
            return tf1.nn.xw_plus_b(x, w, b)
    raise ValueError(f"unknown op {op!r}")


def build_net(net: str, params: Mapping[str, Mapping[str, np.ndarray]]):
    """In the current default graph, build ``net`` under scope ``net``.

    Returns (input placeholder, list of output tensors); both in Sandberg's transposed NHWC layout.
    """
    tf1 = _tf()
    size = INPUT_SIZE[net]
    with tf1.variable_scope(net):
        data = tf1.placeholder(tf1.float32, (None, size, size, 3), "input")
        x = data
        for op, name, args in _TRUNKS[net]:
            if op == "pool":
                x = tf1.nn.max_pool(x, [1, args["k"], args["k"], 1], [1, args["s"], args["s"], 1],
                                    padding=args["padding"], name=name)
            else:
                x = _apply(tf1, op, name, x, params.get(name, {}), args)
        outs = []
        for name, kind, _, softmax in _HEADS[net]:
            y = _apply(tf1, kind, name, x, params[name], {})
            if softmax:
                y = _softmax(tf1, y, 3 if kind == "conv" else 1)
            outs.append(y)
    return data, outs


def run_tf_net(net: str, params: Mapping[str, Mapping[str, np.ndarray]], images: np.ndarray) -> list[np.ndarray]:
    """Run ``net`` on ``images`` (N, C, H, W float32, normal orientation, already normalized).

    The images are transposed to the nets' (N, W, H, C) layout, as the original pipeline does, and
    the outputs are brought back to the PyTorch nets' conventions: P-Net maps as (N, C, H', W'),
    R-Net/O-Net as (N, k). Order of outputs: as the PyTorch nets return them.
    """
    tf1 = _tf()
    graph = tf1.Graph()
    with graph.as_default():
        data, outs = build_net(net, params)
        init = tf1.global_variables_initializer()
    feed = np.ascontiguousarray(np.transpose(images, (0, 3, 2, 1)), dtype=np.float32)
    with tf1.Session(graph=graph) as sess:
        sess.run(init)
        results = sess.run(outs, feed_dict={data: feed})
    if net == "pnet":  # (N, W', H', C) -> (N, C, H', W')
        results = [np.transpose(r, (0, 3, 2, 1)) for r in results]
    return [np.ascontiguousarray(r) for r in results]


def variable_names(net: str, params: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """The TF variable names the graph creates (for checking the table against the graph)."""
    tf1 = _tf()
    graph = tf1.Graph()
    with graph.as_default():
        build_net(net, params)
        return [v.name.split(":")[0] for v in tf1.global_variables()]
