"""Run a source's TensorFlow graph on a batch and collect Sandberg's end points.

Which graph: the frozen `.pb` when there is one, else the exported meta graph restored from the
checkpoint, else our builder (tf_graphs) restored from the checkpoint. The choice, and why an
earlier option was passed over, is returned for the report: nothing falls back silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConversionError
from .sources import TFSource, load_graph_def
from .tf_graphs import END_POINT_TENSORS, build_inference_graph, import_tf


@dataclass
class TFRun:
    graph_used: str                       # e.g. "frozen graph model.pb"
    outputs: dict[str, np.ndarray]        # end point -> activation (NHWC / (N, C)), 'embeddings'
    absent: list[str] = field(default_factory=list)    # end points the graph lacks
    notes: list[str] = field(default_factory=list)
    tf_version: str = ""


def _fetch(sess, graph, images_nhwc: np.ndarray, run: TFRun, input_name="input:0",
           phase_name="phase_train:0"):
    fetches = {}
    for end_point, candidates in END_POINT_TENSORS.items():
        for name in candidates:
            try:
                fetches[end_point] = graph.get_tensor_by_name(name)
                break
            except (KeyError, ValueError):
                continue
        else:
            run.absent.append(end_point)
    if "embeddings" not in fetches:
        raise ConversionError(f"{run.graph_used}: no 'embeddings:0' tensor")
    try:
        feed = {graph.get_tensor_by_name(input_name): images_nhwc}
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{run.graph_used}: no '{input_name}' tensor") from e
    try:
        feed[graph.get_tensor_by_name(phase_name)] = False
    except (KeyError, ValueError):
        run.notes.append(f"{run.graph_used}: no {phase_name} (inference-only graph)")
    run.outputs = sess.run(fetches, feed)


def run_tf(src: TFSource, images_nhwc: np.ndarray) -> TFRun:
    tf = import_tf()
    v1 = tf.compat.v1
    notes: list[str] = []
    if src.keras_h5 is not None:
        return _run_keras_h5(tf, src, images_nhwc)
    if src.frozen_graph is not None:
        graph_def = load_graph_def(src.frozen_graph)
        graph = tf.Graph()
        with graph.as_default():
            v1.import_graph_def(graph_def, name="")
        run = TFRun(f"frozen graph {src.frozen_graph.name}", {}, tf_version=tf.__version__)
        with v1.Session(graph=graph) as sess:
            _fetch(sess, graph, images_nhwc, run)
        return run
    if src.checkpoint_prefix is None:
        raise ConversionError(f"{src.path}: neither a frozen graph nor a checkpoint to run")
    if src.meta_graph is not None:
        graph = tf.Graph()
        try:
            with graph.as_default():
                saver = v1.train.import_meta_graph(str(src.meta_graph), clear_devices=True)
            run = TFRun(f"meta graph {src.meta_graph.name} + {src.checkpoint_prefix.name}", {},
                        tf_version=tf.__version__)
            with v1.Session(graph=graph) as sess:
                saver.restore(sess, str(src.checkpoint_prefix))
                _fetch(sess, graph, images_nhwc, run)
            return run
        except ConversionError:
            raise
        except Exception as e:  # old meta graphs often fail to import in TF 2
            notes.append(f"meta graph {src.meta_graph.name} could not be used "
                         f"({e.__class__.__name__}: {str(e).splitlines()[0][:200]}); "
                         f"ran the reference builder instead")
    return _run_builder(tf, src, images_nhwc, notes)


def _run_builder(tf, src: TFSource, images_nhwc: np.ndarray, notes: list[str]) -> TFRun:
    v1 = tf.compat.v1
    reader = tf.train.load_checkpoint(str(src.checkpoint_prefix))
    shapes = reader.get_variable_to_shape_map()
    if "InceptionResnetV1/Bottleneck/weights" not in shapes:
        raise ConversionError(f"{src.checkpoint_prefix}: no InceptionResnetV1/Bottleneck/weights")
    emb = shapes["InceptionResnetV1/Bottleneck/weights"][1]
    classes = shapes["Logits/weights"][1] if "Logits/weights" in shapes else None
    g = build_inference_graph(emb, classes, image_size=images_nhwc.shape[1])
    run = TFRun(f"reference builder + {src.checkpoint_prefix.name}", {}, notes=notes,
                tf_version=tf.__version__)
    with g.graph.as_default():
        saver = v1.train.Saver(v1.trainable_variables())
        with v1.Session(graph=g.graph) as sess:
            saver.restore(sess, str(src.checkpoint_prefix))
            _fetch(sess, g.graph, images_nhwc, run)
    return run


def _run_keras_h5(tf, src: TFSource, images_nhwc: np.ndarray) -> TFRun:
    """A Keras file's weights in our TF graph: the Keras model itself is not run (its Lambda
    layers are marshalled bytecode of the Python that wrote it, which today's Keras cannot load,
    and which we never execute)."""
    from .h5_source import to_tf_names
    from .sources import read_variables

    v1 = tf.compat.v1
    arrays = to_tf_names(read_variables(src), str(src.keras_h5))
    logits = arrays.get("Logits/weights")
    g = build_inference_graph(arrays["InceptionResnetV1/Bottleneck/weights"].shape[1],
                              None if logits is None else logits.shape[1], image_size=images_nhwc.shape[1])
    run = TFRun(f"reference builder + {src.keras_h5.name} weights", {}, tf_version=tf.__version__, notes=[
        f"{src.keras_h5.name}: the TF side is our TF graph (converter/tf_graphs.py) with the h5 weights "
        f"put in; the Keras model in the file is not run: its Lambda layers are marshalled Python "
        f"bytecode that today's Keras cannot load (and this tool never executes)"])
    with g.graph.as_default(), v1.Session(graph=g.graph) as sess:
        variables = v1.global_variables()
        names = {v.op.name for v in variables}
        if names != set(arrays):
            raise ConversionError(f"{src.keras_h5}: the TF graph's variables and the h5 weights differ: "
                                  f"{sorted(names ^ set(arrays))[:5]}")
        for v in variables:
            v.load(arrays[v.op.name], sess)
        _fetch(sess, g.graph, images_nhwc, run)
    return run
