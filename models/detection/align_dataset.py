"""``facenet align IN_DIR OUT_DIR``: Sandberg's ``align_dataset_mtcnn.py``, step for step.

For every image ``IN_DIR/<class>/<name>.*`` (classes sorted; images sorted here, in ``os.listdir``
order in his script): read it as ``scipy.misc.imread`` did (palette -> RGB or RGBA, 1-bit -> L),
grey -> 3 channels, keep channels 0..2; detect with his MTCNN (minsize 20, thresholds 0.6/0.7/0.7,
factor 0.709, reproduced by models.detection.detect); keep the face maximizing ``area - 2 * squared offset
of the box centre from the image centre`` (or every face with ``--detect-multiple-faces``); widen
the box by ``margin / 2`` on each side, clip it to the image, truncate to integers; crop and resize
to ``image_size`` with PIL's bilinear filter (``scipy.misc.imresize(..., interp='bilinear')`` is
``PIL.Image.resize(..., BILINEAR)``); save ``OUT_DIR/<class>/<name>.png`` (``<name>_<i>.png`` with
several faces). ``bounding_boxes_NNNNN.txt`` lists ``path x1 y1 x2 y2`` per crop and the bare path
of images without a face, as his. An existing output PNG is skipped (resumable, as his).

His defaults: --image-size 182 --margin 44 (the training crops); his LFW evaluation crops are
``--image-size 160 --margin 32``. Not reproduced: his ``revision_info.txt`` (git state of his
checkout) and the random sleep at start-up.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..common.atomic_io import atomic_write_bytes, atomic_write_image
from ..cli.options import in_range
from ..common.paths import check_run_paths, require_regular

DEFAULT_IMAGE_SIZE = 182
DEFAULT_MARGIN = 44


@dataclass
class AlignReport:
    images: int = 0
    aligned: int = 0  # crops written (several per image with detect_multiple_faces)
    skipped: int = 0  # output already present
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    bounding_boxes: str = ""

    def to_text(self) -> str:
        return (f"Total number of images: {self.images}\nNumber of successfully aligned images: {self.aligned}\n"
                f"without a face: {len(self.no_face)}, unreadable: {len(self.unreadable)}, "
                f"already aligned: {self.skipped}\nbounding boxes: {self.bounding_boxes}")


def read_like_imread(path: str) -> np.ndarray:
    """``scipy.misc.imread``: Pillow's array of the file; palette images become RGB (RGBA with a
    transparency), 1-bit ones L; no EXIF rotation."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        return np.asarray(im)


def dataset(input_dir: str) -> list[tuple[str, list[str]]]:
    """(class name, image paths) per sub-folder of ``input_dir``, both sorted."""
    classes = sorted(d for d in os.listdir(input_dir) if os.path.isdir(os.path.join(input_dir, d)))
    return [(c, [os.path.join(input_dir, c, f) for f in sorted(os.listdir(os.path.join(input_dir, c)))])
            for c in classes]


def choose_faces(det: np.ndarray, img_size: np.ndarray, multiple: bool) -> list[np.ndarray]:
    """His choice among several boxes (det: (n, 4); img_size: (height, width))."""
    if len(det) == 1 or multiple:
        return [det[i] for i in range(len(det))]
    size = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    center = img_size / 2
    offsets = np.vstack([(det[:, 0] + det[:, 2]) / 2 - center[1], (det[:, 1] + det[:, 3]) / 2 - center[0]])
    return [det[int(np.argmax(size - np.sum(np.power(offsets, 2.0), 0) * 2.0))]]


def margin_box(det: np.ndarray, margin: int, img_size: np.ndarray) -> np.ndarray:
    """The box widened by margin / 2 per side, clipped to the image, stored as int32 (truncated)."""
    bb = np.zeros(4, dtype=np.int32)
    bb[0] = np.maximum(det[0] - margin / 2, 0)
    bb[1] = np.maximum(det[1] - margin / 2, 0)
    bb[2] = np.minimum(det[2] + margin / 2, img_size[1])
    bb[3] = np.minimum(det[3] + margin / 2, img_size[0])
    return bb


def crop_and_resize(img: np.ndarray, bb: np.ndarray, image_size: int) -> np.ndarray:
    """``misc.imresize(img[y1:y2, x1:x2], (s, s), interp='bilinear')``: PIL's bilinear resize."""
    from PIL import Image

    cropped = np.ascontiguousarray(img[bb[1]:bb[3], bb[0]:bb[2], :])
    return np.asarray(Image.fromarray(cropped).resize((image_size, image_size), Image.BILINEAR))


def _detector(mtcnn):
    import torch

    from .detect import detect_faces

    def detect(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        return detect_faces(x, mtcnn.pnet, mtcnn.rnet, mtcnn.onet, mtcnn.min_face_size, mtcnn.thresholds,
                            mtcnn.factor).boxes.cpu().numpy()

    return detect


def align_dataset(input_dir: str, output_dir: str, image_size: int = DEFAULT_IMAGE_SIZE,
                  margin: int = DEFAULT_MARGIN, random_order: bool = False, detect_multiple_faces: bool = False,
                  mtcnn=None, log=print) -> AlignReport:
    """Align a dataset as Sandberg's script does; returns what was done. Raises ValueError for
    bad arguments (an output folder inside the input, sizes out of range)."""
    if not os.path.isdir(input_dir):
        raise ValueError(f"{input_dir}: no such directory")
    check_run_paths(inputs=[Path(input_dir)], output_dirs=[Path(output_dir)])   # the output rule (PathError)
    if image_size < 1 or margin < 0:
        raise ValueError(f"--image-size must be >= 1 and --margin >= 0 (got {image_size}, {margin})")
    if mtcnn is None:
        from .mtcnn import MTCNN

        mtcnn = MTCNN()
    detect = _detector(mtcnn)
    output_dir = os.path.expanduser(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    report = AlignReport()
    report.bounding_boxes = os.path.join(output_dir, "bounding_boxes_%05d.txt" % np.random.randint(0, high=99999))
    lines = []
    classes = dataset(input_dir)
    if random_order:
        random.shuffle(classes)
    for name, paths in classes:
        class_dir = os.path.join(output_dir, name)
        if not os.path.exists(class_dir):
            os.makedirs(class_dir)
            if random_order:
                random.shuffle(paths)
        for image_path in paths:
            report.images += 1
            output_filename = os.path.join(class_dir, os.path.splitext(os.path.split(image_path)[1])[0] + ".png")
            if os.path.exists(output_filename):
                report.skipped += 1
                continue
            try:
                require_regular(image_path, "image")   # a FIFO would block, a device never end
                img = read_like_imread(image_path)
            except (OSError, ValueError, IndexError) as e:
                log(f"{image_path}: {e}")
                report.unreadable.append(image_path)
                continue
            if img.ndim < 2:
                log(f'Unable to align "{image_path}"')
                report.no_face.append(image_path)
                lines.append(f"{output_filename}\n")
                continue
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            img = img[:, :, 0:3]
            boxes = detect(img)
            if len(boxes) == 0:
                log(f'Unable to align "{image_path}"')
                report.no_face.append(image_path)
                lines.append(f"{output_filename}\n")
                continue
            img_size = np.asarray(img.shape)[0:2]
            base, ext = os.path.splitext(output_filename)
            for i, det in enumerate(choose_faces(boxes[:, 0:4], img_size, detect_multiple_faces)):
                bb = margin_box(np.squeeze(det), margin, img_size)
                target = f"{base}_{i}{ext}" if detect_multiple_faces else output_filename
                atomic_write_image(target, crop_and_resize(img, bb, image_size))
                report.aligned += 1
                lines.append("%s %d %d %d %d\n" % (target, bb[0], bb[1], bb[2], bb[3]))
    atomic_write_bytes(report.bounding_boxes, "".join(lines).encode())
    return report


# ------------------------------------------------------------------------------------------- CLI

def add_align_command(sub) -> None:
    p = sub.add_parser("align", help="align a dataset with MTCNN as Sandberg's align_dataset_mtcnn.py",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("input_dir", metavar="IN_DIR", help="images as IN_DIR/<class>/<image>")
    p.add_argument("output_dir", metavar="OUT_DIR", help="crops go to OUT_DIR/<class>/<image>.png")
    p.add_argument("--image-size", type=in_range(int, 1, 1024), default=DEFAULT_IMAGE_SIZE, metavar="PX",
                   help=f"crop side in pixels (default {DEFAULT_IMAGE_SIZE}; 160 for LFW evaluation)")
    p.add_argument("--margin", type=in_range(int, 0, 10000), default=DEFAULT_MARGIN, metavar="PX",
                   help=f"margin around the box in source pixels (default {DEFAULT_MARGIN}; 32 for LFW)")
    p.add_argument("--random-order", action="store_true", help="shuffle classes and images (parallel runs)")
    p.add_argument("--detect-multiple-faces", action="store_true", help="a crop per face, not just the central one")
    p.add_argument("--device", default=None, help="cpu or cuda (default cpu)")


def cmd_align(args) -> int:
    from .mtcnn import MTCNN

    report = align_dataset(args.input_dir, args.output_dir, args.image_size, args.margin, args.random_order,
                           args.detect_multiple_faces, mtcnn=MTCNN(device=args.device))
    print(report.to_text())
    return 0
