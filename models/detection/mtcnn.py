"""MTCNN face detection and cropping, with the interface users of facenet-pytorch know.

    mtcnn = MTCNN()                                  # committed weights, checkpoints/mtcnn/*.pt
    boxes, probs, points = mtcnn.detect(img, landmarks=True)
    face = mtcnn(img)                                # (3, 160, 160), standardized (x - 127.5) / 128

``img`` may be a PIL image, an H x W x 3 uint8 array or tensor, a list of them (any sizes), or a
4-D (N, H, W, 3) array/tensor of same-size frames. For a batch, results are lists with ``None``
for images without a face. Grayscale and RGBA inputs are converted to RGB.

Differences from facenet-pytorch worth knowing: an image without a face gives ``None`` for its
boxes, probs and points (facenet-pytorch gives ``[None]`` for probs); lists may mix image sizes;
``align=True`` crops with a 5-point similarity transform instead of the box; crops are resampled
with a box filter in torch rather than with PIL.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .align import alignment_affine
from .detect import Detections, box_affine, detect_faces, sample_affine, supersample_for
from .mtcnn_nets import NETS, ONet, PNet, RNet
from ..hub.serialization import load_state_dict_file

__all__ = ["MTCNN", "PNet", "RNet", "ONet", "default_weights_dir", "load_net", "fixed_image_standardization",
           "SELECTION_METHODS"]

SELECTION_METHODS = ("largest", "probability", "largest_over_threshold", "center_weighted_size")
_EXTRACT_SUPERSAMPLE_CAP = 8
# Largest image (width x height) MTCNN accepts by default: ~50 MP, the bound models.data.datasets.load_image
# decodes to. Detection needs a float copy of the frame plus its pyramid (about 25-30 bytes per
# pixel at peak): a bigger frame is refused with a message rather than risking several GB.
MAX_PIXELS = 50_000_000
# Same-size frames are detected together up to this many pixels per call: batching 8 frames of
# 250 px gave 120 images/s against 74 one by one, but 8 of 2000 x 1500 px 2.1 against 3.9 (make bench)
BATCH_PIXELS = 1 << 21


# ------------------------------------------------------------------------------------- weights

def default_weights_dir() -> Path:
    """Where ``MTCNN()`` finds its weights when none are given: the registry's lookup
    (``$FACENET_HOME/mtcnn``, the package's committed ``checkpoints/mtcnn``, the hub cache)."""
    from ..hub.pretrained import resolve_mtcnn_weights

    return resolve_mtcnn_weights()


def weight_file(net: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """``<dir>/<net>.pt``, else ``<dir>/<net>.safetensors``."""
    d = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    for suffix in (".pt", ".safetensors"):
        path = d / f"{net}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{d}: no {net}.pt or {net}.safetensors (convert Sandberg's det*.npy with "
        f"`facenet-convert mtcnn SRC_DIR -o {d}`)"
    )


def load_net(net: str, weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """A P-, R- or O-Net (``net`` in pnet/rnet/onet) with weights loaded safely, in eval mode."""
    if net not in NETS:
        raise ValueError(f"unknown MTCNN net {net!r}; expected one of {', '.join(NETS)}")
    module = NETS[net]()
    module.load_state_dict(load_state_dict_file(weight_file(net, weights_dir)), strict=True)
    return module.eval()


def fixed_image_standardization(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) / 128.0


# -------------------------------------------------------------------------------------- inputs

def _is_batch(img) -> bool:
    return isinstance(img, (list, tuple)) or (isinstance(img, (np.ndarray, torch.Tensor)) and img.ndim == 4)


def _check_size(height: int, width: int, max_pixels: int | None) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ValueError(
            f"image of {width}x{height} = {width * height / 1e6:.0f} MP is over MTCNN's limit of "
            f"{max_pixels / 1e6:.0f} MP (max_pixels): detection would need several GB of memory. "
            f"Downscale it first (models.data.datasets.load_image does), or build MTCNN(max_pixels=None)")


def _pil_to_rgb_array(img) -> np.ndarray:
    """An RGB uint8 array from a PIL image of any mode. 16-bit grey (I;16*, or I holding 16-bit
    values) is scaled 0..65535 -> 0..255: Pillow's convert('RGB') would clip it to white."""
    if img.mode == "RGB":
        return np.asarray(img)
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img).astype(np.float64)
        if img.mode != "F" and (img.mode.startswith("I;16") or a.max(initial=0) > 255):
            a = a / 257.0
        grey = np.round(np.clip(a, 0, 255)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def _to_rgb(img, max_pixels: int | None = None) -> torch.Tensor:
    """One image -> (H, W, 3) tensor on the CPU: uint8 for uint8 images (a PIL image, a uint8
    array: no float copy, and the detector knows it holds uint8 values), else float32 (values as
    given, nominally 0..255). Images over ``max_pixels`` are refused before any copy is made."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None
    if Image is not None and isinstance(img, Image.Image):
        _check_size(img.height, img.width, max_pixels)
        img = _pil_to_rgb_array(img)
    if isinstance(img, (np.ndarray, torch.Tensor)) and img.ndim >= 2:
        _check_size(int(img.shape[0]), int(img.shape[1]), max_pixels)
    if isinstance(img, np.ndarray):
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        # one copy (a PIL image's array is read-only)
        t = torch.from_numpy(np.array(img, dtype=np.uint8 if img.dtype == np.uint8 else np.float32))
    elif isinstance(img, torch.Tensor):
        t = img.detach().cpu()
    else:
        raise TypeError(f"unsupported image type {type(img).__name__}: use a PIL image, an HxWx3 array or tensor")
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {tuple(t.shape)}")
    if t.shape[-1] == 1:
        t = t.expand(-1, -1, 3)
    elif t.shape[-1] == 4:
        t = t[..., :3]
    return t if t.dtype == torch.uint8 else t.float()


def _frames(img, max_pixels: int | None = None) -> tuple[list[torch.Tensor], bool]:
    batched = _is_batch(img)
    items = list(img) if batched else [img]
    return [_to_rgb(x, max_pixels) for x in items], batched


def _size_groups(frames: Sequence[torch.Tensor], max_pixels: int) -> list[list[int]]:
    """Indices of same-size frames, in batches of at most ``max_pixels`` pixels (one frame at least)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(frames):
        groups.setdefault((f.shape[0], f.shape[1]), []).append(i)
    batches = []
    for (h, w), idx in groups.items():
        per_batch = max(1, max_pixels // (h * w))
        batches += [idx[k: k + per_batch] for k in range(0, len(idx), per_batch)]
    return batches


# ---------------------------------------------------------------------------------------- MTCNN

def _save_paths(save_path, n: int) -> list:
    """One save path (or None) per frame: a single path goes to the first frame."""
    if save_path is None:
        return [None] * n
    if isinstance(save_path, (str, os.PathLike)):
        return [save_path] + [None] * (n - 1)
    return list(save_path)


class MTCNN(nn.Module):
    """MTCNN face detector and cropper (P-, R- and O-Net cascade).

    image_size: side of the square face crops. margin: extra border, in output pixels (as
    facenet-pytorch; in source pixels it is ``margin * box_size / (image_size - margin)``).
    min_face_size, thresholds, factor: the cascade's parameters (Sandberg's defaults).
    post_process: standardize crops as ``(x - 127.5) / 128``. select_largest / selection_method:
    which face ``__call__`` returns when ``keep_all`` is False -- one of ``largest``,
    ``probability``, ``largest_over_threshold`` (largest with prob > 0.9), ``center_weighted_size``
    (Sandberg's LFW choice: area - 2 * squared offset of the box centre from the image centre).
    keep_all: return every face. device: where the nets run. weights: a folder with
    pnet/rnet/onet ``.pt`` or ``.safetensors`` (default: the committed ``checkpoints/mtcnn``).
    align: crop with a 5-point similarity transform (eyes, nose, mouth corners onto a template).
    max_pixels: the largest image (width x height) accepted; bigger ones raise ValueError (None:
    no limit; the default, ~50 MP, is what models.data.datasets.load_image decodes large photos down to).
    """

    def __init__(
        self,
        image_size: int = 160,
        margin: int = 0,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        post_process: bool = True,
        select_largest: bool = True,
        selection_method: str | None = None,
        keep_all: bool = False,
        device: torch.device | str | None = None,
        weights: str | os.PathLike | None = None,
        align: bool = False,
        max_pixels: int | None = MAX_PIXELS,
    ):
        super().__init__()
        if max_pixels is not None and max_pixels < 1:
            raise ValueError("max_pixels must be positive, or None for no limit")
        self.max_pixels = max_pixels
        if len(thresholds) != 3:
            raise ValueError("thresholds must hold three values (P-, R-, O-Net)")
        if not 0 < factor < 1:
            raise ValueError("factor must lie strictly between 0 and 1")
        if min_face_size <= 0:
            raise ValueError("min_face_size must be positive")
        if not 0 <= margin < image_size:
            raise ValueError("margin must lie in [0, image_size)")
        self.image_size = int(image_size)
        self.margin = margin
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.post_process = post_process
        self.select_largest = select_largest
        self.keep_all = keep_all
        self.align = align
        self.selection_method = selection_method or ("largest" if select_largest else "probability")
        if self.selection_method not in SELECTION_METHODS:
            raise ValueError(f"selection_method must be one of {', '.join(SELECTION_METHODS)}")
        self.weights_dir = Path(weights) if weights is not None else default_weights_dir()
        self.pnet = load_net("pnet", self.weights_dir)
        self.rnet = load_net("rnet", self.weights_dir)
        self.onet = load_net("onet", self.weights_dir)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.to(self.device)
        self.eval()

    # -- detection ------------------------------------------------------------------------------

    def _detect_frames(self, frames: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Per image: (boxes (n, 4), probs (n,), points (n, 5, 2)) as float32 arrays, or None."""
        results: list = [None] * len(frames)
        for idx in _size_groups(frames, BATCH_PIXELS):
            # one image: a view, not a copy (a large frame is hundreds of MB as float32)
            group = [frames[i] for i in idx]
            if len({f.dtype for f in group}) > 1:  # uint8 beside float: all as float
                group = [f.float() for f in group]
            batch = group[0].unsqueeze(0) if len(idx) == 1 else torch.stack(group)
            batch = batch.to(self.device).permute(0, 3, 1, 2)
            det: Detections = detect_faces(batch, self.pnet, self.rnet, self.onet,
                                           self.min_face_size, self.thresholds, self.factor)
            boxes = det.boxes.cpu().numpy()
            scores = det.scores.cpu().numpy()
            points = det.points.cpu().numpy()
            owner = det.image_index.cpu().numpy()
            for local, i in enumerate(idx):
                sel = np.flatnonzero(owner == local)
                if sel.size == 0:
                    continue
                b, p, pts = boxes[sel], scores[sel], points[sel]
                if self.select_largest:
                    order = np.argsort(-((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])), kind="stable")
                else:
                    order = np.argsort(-p, kind="stable")
                results[i] = (b[order].astype(np.float32), p[order].astype(np.float32),
                              pts[order].astype(np.float32))
        return results

    def detect(self, img, landmarks: bool = False):
        """Detect faces. Returns ``(boxes, probs)`` or ``(boxes, probs, points)``.

        boxes: (n, 4) ``[x1, y1, x2, y2]``; probs: (n,); points: (n, 5, 2) -- left eye, right eye,
        nose, left and right mouth corner, as (x, y). Ordered by area if ``select_largest`` else by
        probability. For a batch input, lists with one entry per image (None where no face).
        """
        frames, batched = _frames(img, self.max_pixels)
        res = self._detect_frames(frames)
        boxes = [r[0] if r else None for r in res]
        probs = [r[1] if r else None for r in res]
        points = [r[2] if r else None for r in res]
        if not batched:
            boxes, probs, points = boxes[0], probs[0], points[0]
        return (boxes, probs, points) if landmarks else (boxes, probs)

    # -- selection ------------------------------------------------------------------------------

    @staticmethod
    def _select_one(boxes, probs, points, width, height, method, threshold, center_weight):
        if boxes is None or len(boxes) == 0:
            return None
        boxes, probs = np.asarray(boxes, np.float64), np.asarray(probs, np.float64)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        if method == "largest":
            key = area
        elif method == "probability":
            key = probs
        elif method == "largest_over_threshold":
            key = np.where(probs > threshold, area, -np.inf)
            if not np.isfinite(key).any():
                return None
        elif method == "center_weighted_size":
            cx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
            cy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
            key = area - center_weight * (cx**2 + cy**2)
        else:
            raise ValueError(f"selection method must be one of {', '.join(SELECTION_METHODS)}, not {method!r}")
        k = int(np.argmax(key))  # first of equals: keeps the detect() order on ties
        pts = None if points is None else np.asarray(points)[[k]]
        return np.asarray(boxes[[k]], np.float32), np.asarray(probs[[k]], np.float32), pts

    def select_boxes(self, all_boxes, all_probs, all_points, imgs, method: str | None = None,
                     threshold: float = 0.9, center_weight: float = 2.0):
        """Keep one face per image by ``method`` (default: this detector's selection_method).

        Returns (boxes (1, 4), probs, points (1, 5, 2)) per image -- for a single image, probs is a
        float -- or None for images without a (qualifying) face."""
        method = method or self.selection_method
        frames, batched = _frames(imgs, self.max_pixels)
        if not batched:
            all_boxes, all_probs, all_points = [all_boxes], [all_probs], [all_points]
        if all_points is None:
            all_points = [None] * len(frames)
        out_b, out_p, out_pt = [], [], []
        for f, b, p, pt in zip(frames, all_boxes, all_probs, all_points):
            sel = self._select_one(b, p, pt, f.shape[1], f.shape[0], method, threshold, center_weight)
            out_b.append(sel[0] if sel else None)
            out_p.append(sel[1] if sel else None)
            out_pt.append(sel[2] if sel else None)
        if not batched:
            p0 = out_p[0]
            return out_b[0], (float(p0[0]) if p0 is not None else None), out_pt[0]
        return out_b, out_p, out_pt

    # -- cropping -------------------------------------------------------------------------------

    def _crop_affines(self, frame: torch.Tensor, boxes: np.ndarray, points) -> tuple[torch.Tensor, int]:
        h, w = frame.shape[0], frame.shape[1]
        size = self.image_size
        if self.align:
            if points is None:
                raise ValueError("align=True needs the landmarks: pass landmarks= to extract()")
            aff = alignment_affine(torch.as_tensor(np.asarray(points), dtype=torch.float64), size, self.margin)
            scale = float(torch.linalg.matrix_norm(aff[:, :, :2], ord=2).max())
            return aff, int(min(_EXTRACT_SUPERSAMPLE_CAP, max(1, np.ceil(scale))))
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
        mx = self.margin * (b[:, 2] - b[:, 0]) / (size - self.margin)
        my = self.margin * (b[:, 3] - b[:, 1]) / (size - self.margin)
        # facenet-pytorch's crop: margin added, clamped to the image, truncated to whole pixels
        edges = torch.stack((
            torch.clamp(b[:, 0] - mx / 2, min=0),
            torch.clamp(b[:, 1] - my / 2, min=0),
            torch.clamp(b[:, 2] + mx / 2, max=w),
            torch.clamp(b[:, 3] + my / 2, max=h),
        ), dim=1).trunc()
        return box_affine(edges, size), supersample_for(edges, size, _EXTRACT_SUPERSAMPLE_CAP)

    def _extract_frames(self, frames, batch_boxes, batch_points, save_paths):
        faces = []
        for i, frame in enumerate(frames):
            boxes = batch_boxes[i]
            if boxes is None or len(boxes) == 0:
                faces.append(None)
                continue
            boxes = np.asarray(boxes).reshape(-1, 4)
            points = batch_points[i] if batch_points is not None else None
            if points is not None:
                points = np.asarray(points).reshape(-1, 5, 2)
            if not self.keep_all:
                boxes = boxes[:1]
                points = points[:1] if points is not None else None
            affine, s = self._crop_affines(frame, boxes, points)
            image = frame.permute(2, 0, 1).unsqueeze(0).to(self.device, torch.float32)
            index = torch.zeros(len(boxes), dtype=torch.long, device=self.device)
            crops = sample_affine(image, index, affine.to(self.device), self.image_size, s)
            crops = crops.round_().clamp_(0, 255).cpu()
            if save_paths[i] is not None:
                _save_crops(crops, save_paths[i])
            if self.post_process:
                crops = fixed_image_standardization(crops)
            faces.append(crops if self.keep_all else crops[0])
        return faces

    def extract(self, img, batch_boxes, save_path=None, landmarks=None):
        """Crop faces given their boxes (as ``detect`` returns them). Returns a (3, S, S) tensor per
        image (``keep_all``: (n, 3, S, S)), None where an image has no box; for a batch, a list.
        ``save_path``: a file name (a list of them for a batch); extra faces go to ``name_2.ext``,
        ... ``landmarks`` (as ``detect`` returns them) are needed when ``align=True``."""
        frames, batched = _frames(img, self.max_pixels)
        if not batched:
            batch_boxes = [batch_boxes]
            landmarks = [landmarks] if landmarks is not None else None
        save_paths = _save_paths(save_path, len(frames))
        faces = self._extract_frames(frames, batch_boxes, landmarks, save_paths)
        return faces if batched else faces[0]

    def forward(self, img, save_path=None, return_prob: bool = False):
        """Detect, select (unless ``keep_all``) and crop. Returns the face tensor(s), and with
        ``return_prob`` the probabilities as well."""
        frames, batched = _frames(img, self.max_pixels)
        res = self._detect_frames(frames)
        boxes = [r[0] if r else None for r in res]
        probs = [r[1] if r else None for r in res]
        points = [r[2] if r else None for r in res]
        if not self.keep_all:
            picked = [self._select_one(b, p, pt, f.shape[1], f.shape[0], self.selection_method, 0.9, 2.0)
                      for f, b, p, pt in zip(frames, boxes, probs, points)]
            boxes = [s[0] if s else None for s in picked]
            probs = [float(s[1][0]) if s else None for s in picked]
            points = [s[2] if s else None for s in picked]
        save_paths = _save_paths(save_path, len(frames))
        faces = self._extract_frames(frames, boxes, points, save_paths)
        if not batched:
            faces, probs = faces[0], probs[0]
        return (faces, probs) if return_prob else faces


def _save_crops(crops: torch.Tensor, path) -> None:
    from ..common.atomic_io import atomic_write_image

    path = str(path)
    base, ext = os.path.splitext(path)
    for k, crop in enumerate(crops):
        atomic_write_image(path if k == 0 else f"{base}_{k + 1}{ext}", crop.permute(1, 2, 0).to(torch.uint8).numpy())
