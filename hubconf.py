"""torch.hub entry points: the models built from the registry by facenet_tf2pt's builder.

    model = torch.hub.load("path/to/facenet-tf2pt", "inception_resnet_v1", weights="out/demo.pt", source="local")
    model = torch.hub.load("path/to/facenet-tf2pt", "inception_resnet_v1", weights="20170512-110547", source="local")
    mtcnn = torch.hub.load("path/to/facenet-tf2pt", "mtcnn", source="local")

Which code runs: this folder's. torch.hub puts the folder on sys.path, but the folder IS the package
`facenet_tf2pt` (pyproject maps the repository root onto it), so the name does not resolve from
there. When `facenet_tf2pt` resolves to this folder (an editable install of this checkout), it is
imported as usual; when it is not installed, or installed from another tree (a release in
site-packages), this folder is loaded as `facenet_tf2pt`: `torch.hub.load(dir)` means "the code in
dir", and a different installed version must not run in its place. One exception: a different
`facenet_tf2pt` already imported in this process is kept (a module name has one module per process;
replacing it would leave two incompatible copies of every class), with a warning naming both folders.
"""
import importlib as _importlib
import importlib.util as _importlib_util
import sys as _sys
import warnings as _warnings
from pathlib import Path as _Path

dependencies = ["torch", "numpy"]

_PACKAGE = "facenet_tf2pt"
_HERE = _Path(__file__).resolve().parent


def _is_here(file) -> bool:
    return file is not None and _Path(file).resolve().parent == _HERE


def _package():
    """The facenet_tf2pt package of this folder (see the module docstring for the rules)."""
    loaded = _sys.modules.get(_PACKAGE)
    if loaded is not None:
        if not _is_here(getattr(loaded, "__file__", None)):
            _warnings.warn(f"torch.hub: {_PACKAGE} is already imported from {_Path(loaded.__file__).parent}; "
                           f"using it, not {_HERE}", RuntimeWarning, stacklevel=3)
        return loaded
    found = _importlib_util.find_spec(_PACKAGE)
    if found is not None and _is_here(found.origin):
        return __import__(_PACKAGE)
    spec = _importlib_util.spec_from_file_location(_PACKAGE, _HERE / "__init__.py",
                                                   submodule_search_locations=[str(_HERE)])
    module = _importlib_util.module_from_spec(spec)
    _sys.modules[_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del _sys.modules[_PACKAGE]
        raise
    return module


def _builder():
    _package()
    return _importlib.import_module(f"{_PACKAGE}.models.hub.builder")


def inception_resnet_v1(weights=None, **kwargs):
    """InceptionResNetV1 (FaceNet) in eval mode.

    weights: a registry id, name, tag or alias ('inception_resnet_v1.vggface2', '20180402-114759',
        'vggface2', 'ci-fixture', ...; `facenet_tf2pt.list_models()` lists them), or a converted
        weights file (.pt or .safetensors); None for random initialisation. Registered weights are
        looked up in $FACENET_HOME, the package's checkpoints/ and the torch hub cache, and downloaded
        (sha256-checked) where the registry has a URL.
    kwargs: as `facenet_tf2pt.inception_resnet_v1`: classify, num_classes, embedding_size (taken
        from the weights; a conflicting value raises), device, download, progress, bn_eps,
        bn_momentum, dropout_prob.
    """
    return _builder().inception_resnet_v1(weights, **kwargs)


def mtcnn(**kwargs):
    """MTCNN face detector with Sandberg's weights (committed under checkpoints/mtcnn/).

    kwargs: as `facenet_tf2pt.MTCNN`: image_size, margin, min_face_size, thresholds, factor,
        selection_method, keep_all, align, device, weights (a folder with pnet/rnet/onet weights), ...
    """
    return _builder().get_model("mtcnn", **kwargs)
