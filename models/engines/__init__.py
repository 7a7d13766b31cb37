"""Fast CPU inference engines for InceptionResNetV1: BatchNorm folded into prepacked oneDNN convs
(`fused.py`), a oneDNN Graph compiled partition (`onednn_graph.py`), the folded model as an ONNX
graph run by onnxruntime (`onnx_graph.py`, `onnxruntime_engine.py`), and the measured rules that
choose between them per CPU and batch size (`engine_rules.py`, `cpu_caps.py`). `model.fuse()`
reaches them through models/nets/hooks.py. Importing this package does not import torch."""


def fuse(model, **options):
    """The engine behind `InceptionResNetV1.fuse()` (models/engines/fused.py `fuse_inception`)."""
    from .fused import fuse_inception

    return fuse_inception(model, **options)
