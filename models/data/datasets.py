"""Face image datasets and data loaders, without torchvision.

`load_image(path)` decodes any image Pillow reads into an RGB PIL image: EXIF orientation applied,
grayscale / palette / RGBA / CMYK / 16-bit converted, the first frame of an animated image,
and a bound on pixel count (decompression-bomb guard: large JPEGs are decoded downscaled, other
formats refused).

`FaceDataset` is a folder of identity subfolders (``root/<name>/**/<image>``; images directly
in ``root`` get the label ``""``) or a list of paths. Unreadable files are reported by path and
skipped (``dataset.skipped``: a list of ``(path, reason)``), or raise in ``strict=True`` mode.

`make_loader` wraps a torch DataLoader with `collate_faces`, which sets aside samples that failed
to decode or have no face, so a batch is never lost to one bad file.
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..common.paths import PathError, require_regular, walk_files
from .preprocessing import resize, standardize, to_tensor

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
    ".pbm", ".pnm",
})
MAX_PIXELS = 50_000_000          # decompression-bomb guard, ~50 megapixels
BACKGROUND = (255, 255, 255)     # transparent pixels are composited onto white


class ImageLoadError(ValueError):
    """An image could not be decoded or was refused; ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(ImageLoadError):
    pass


def _describe(e: BaseException) -> str:
    msg = str(e).strip() or "no details"
    return f"corrupt or unreadable image ({type(e).__name__}: {msg})"


def _open_checked(path, max_pixels: int | None, draft: bool = True) -> Image.Image:
    """Open (header only) and apply the pixel bound: JPEGs over it get a draft (DCT-scaled,
    downscaled) decode, when ``draft``; other formats are refused."""
    try:
        require_regular(path, "image")   # a FIFO named *.jpg would block the open forever
    except PathError as e:
        raise ImageLoadError(path, str(e).split(": ", 1)[-1]) from None
    except FileNotFoundError as e:
        raise ImageLoadError(path, "no such file") from e
    try:
        with warnings.catch_warnings():
            # We apply our own bound below; Pillow's warning (89 MP) would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"refused, too large to decode safely ({e})") from e
    except FileNotFoundError as e:
        raise ImageLoadError(path, "no such file") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(path, "not an image Pillow can read (unknown format or corrupt header)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageLoadError(path, _describe(e)) from e
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageLoadError(path, f"empty image ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        if im.format == "JPEG":
            if not draft:
                return im
            scale = (max_pixels / (w * h)) ** 0.5
            # draft() picks the largest 1/2^k reduction whose size is still >= the request, i.e.
            # at most twice the request per side: asking for half the bound keeps it within bound.
            im.draft("RGB", (max(1, int(w * scale / 2)), max(1, int(h * scale / 2))))
            warnings.warn(f"{path}: {w}x{h} = {w * h / 1e6:.0f} MP is over the {max_pixels / 1e6:.0f} MP "
                          f"limit (max_pixels); decoded downscaled", stacklevel=3)
        else:
            im.close()
            raise ImageTooLargeError(
                path, f"{w}x{h} = {w * h / 1e6:.0f} MP is over the {max_pixels / 1e6:.0f} MP limit "
                      f"(max_pixels); refused as a possible decompression bomb: downscale it first")
    return im


def check_image(path, max_pixels: int | None = MAX_PIXELS) -> None:
    """Cheap check (header only): raises ImageLoadError if the file is not a readable image."""
    _open_checked(path, max_pixels, draft=False).close()


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale: scale 0..65535 to 0..255 (Pillow's convert('L') would clip instead).
        a = np.asarray(im).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.clip(np.asarray(im, dtype=np.float64), 0, 255)
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")   # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an RGB PIL image, upright per its EXIF orientation.

    Animated images give their first frame. Raises ImageLoadError (with the path and a reason)
    for anything unreadable, truncated, or over ``max_pixels`` (JPEGs are downscaled instead).
    """
    im = _open_checked(path, max_pixels)
    try:
        with im:
            if getattr(im, "is_animated", False):
                im.seek(0)                     # animated GIF / APNG / WebP: the first frame
            im.load()
            im = ImageOps.exif_transpose(im)   # a copy, detached from the file
            if max_pixels is not None and im.width * im.height > max_pixels:
                # a draft decode shrinks by at most 8x; finish the job
                s = (max_pixels / (im.width * im.height)) ** 0.5
                im = im.resize((max(1, int(im.width * s)), max(1, int(im.height * s))), Image.BILINEAR)
            return _to_rgb(im)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"refused, too large to decode safely ({e})") from e
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ImageLoadError(path, _describe(e)) from e


def is_image_file(path) -> bool:
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def scan_tree(root, skipped: list | None = None) -> tuple[list[str], list[str]]:
    """(paths, labels): images under ``root``, label = the top-level subfolder's name ('' at root).

    Sorted: labels alphabetically, then paths within a label. Hidden files and folders are ignored.
    Each real file is found once; links are followed only inside the tree (see
    `models.common.paths.walk_files`); what was not walked (links out of the tree or in a loop,
    unreadable folders, FIFOs) is appended to ``skipped`` as (path, reason).
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    walk = walk_files(root, accept=is_image_file)
    if skipped is not None:
        skipped += walk.skipped
    found = sorted(((p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else ""), str(p))
                   for p in walk.files)
    return [p for _, p in found], [lab for lab, _ in found]


def crops_transform(image_size: int = 160, standardization: str | None = "fixed") -> Callable:
    """The transform for images that are already face crops: resize, to tensor, standardize."""
    def transform(img: Image.Image) -> torch.Tensor:
        return standardize(to_tensor(resize(img, image_size)), standardization)

    return transform


class FaceDataset(torch.utils.data.Dataset):
    """Images from an identity-subfolder tree (``FaceDataset(root)``) or a list of paths.

    - ``transform``: applied to the decoded RGB PIL image; may return None (e.g. a detector that
      found no face), which the collate reports as skipped. Default: return the PIL image.
    - ``labels``: for a list of paths, optional label names; for a tree, the subfolder names.
    - ``strict``: raise ImageLoadError on the first unreadable file instead of skipping it.
    - ``check_headers``: at construction, open each file's header (cheap) so non-images and
      refused sizes land in ``skipped`` up front; decode errors (e.g. truncated data) are found
      when the item is read and reach ``skipped`` through `make_loader`'s iteration.

    An item is a dict: ``image`` (transform output, or None), ``label`` (int index into
    ``classes``), ``path`` (str), ``index`` (int), ``error`` (None, or the reason it failed).
    """

    def __init__(self, root_or_paths, transform: Callable | None = None, labels: Sequence[str] | None = None,
                 strict: bool = False, max_pixels: int | None = MAX_PIXELS, check_headers: bool = True):
        if isinstance(root_or_paths, (str, os.PathLike)):
            self.root: str | None = str(root_or_paths)
            walk_skipped: list[tuple[str, str]] = []
            paths, names = scan_tree(root_or_paths, walk_skipped)
            if strict and walk_skipped:
                raise ImageLoadError(*walk_skipped[0])
            if labels is not None:
                raise ValueError("labels= is for a list of paths; a folder's labels are its subfolder names")
        else:
            self.root = None
            paths = [str(p) for p in root_or_paths]
            names = [str(n) for n in labels] if labels is not None else [""] * len(paths)
            if len(names) != len(paths):
                raise ValueError(f"{len(paths)} paths but {len(names)} labels")
        self.transform = transform
        self.strict = strict
        self.max_pixels = max_pixels
        self.skipped: list[tuple[str, str]] = list(walk_skipped) if self.root is not None else []
        if check_headers:
            keep = []
            for i, p in enumerate(paths):
                try:
                    check_image(p, max_pixels=max_pixels)
                    keep.append(i)
                except ImageLoadError as e:
                    if strict:
                        raise
                    self.skipped.append((e.path, e.reason))
            paths = [paths[i] for i in keep]
            names = [names[i] for i in keep]
        self.paths: list[str] = paths
        self.label_names: list[str] = names
        self.classes: list[str] = sorted(set(names))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets: list[int] = [self.class_to_idx[n] for n in names]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        item = {"image": None, "label": self.targets[index], "path": path, "index": index, "error": None}
        try:
            img = load_image(path, max_pixels=self.max_pixels)
        except ImageLoadError as e:
            if self.strict:
                raise
            item["error"] = e.reason
            return item
        item["image"] = self.transform(img) if self.transform is not None else img
        return item

    def record_failures(self, failed: Iterable[tuple[str, str]]) -> None:
        """Add (path, reason) pairs to ``skipped`` (no duplicates)."""
        seen = {p for p, _ in self.skipped}
        for p, r in failed:
            if p not in seen:
                self.skipped.append((p, r))
                seen.add(p)


@dataclass
class FaceBatch:
    """A collated batch. ``images`` is an (N, C, H, W) tensor when the items are equal-shaped
    tensors, else a list (e.g. PIL images for detection). ``failed``: (path, reason) set aside."""

    images: torch.Tensor | list
    labels: torch.Tensor
    paths: list[str]
    indices: torch.Tensor
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def pin_memory(self) -> "FaceBatch":
        # DataLoader(pin_memory=True) calls this on custom batch types.
        if isinstance(self.images, torch.Tensor):
            self.images = self.images.pin_memory()
        self.labels = self.labels.pin_memory()
        self.indices = self.indices.pin_memory()
        return self


NO_FACE = "no face detected"


def collate_faces(items: list[dict]) -> FaceBatch:
    """Collate FaceDataset items, setting aside failed ones and ones whose image is None (no face)."""
    good, failed = [], []
    for it in items:
        if it["error"] is not None:
            failed.append((it["path"], it["error"]))
        elif it["image"] is None:
            failed.append((it["path"], NO_FACE))
        else:
            good.append(it)
    images = [it["image"] for it in good]
    if images and all(isinstance(x, torch.Tensor) for x in images) and len({tuple(x.shape) for x in images}) == 1:
        images = torch.stack(images)
    elif not images:
        images = torch.empty(0)
    return FaceBatch(
        images=images,
        labels=torch.tensor([it["label"] for it in good], dtype=torch.long),
        paths=[it["path"] for it in good],
        indices=torch.tensor([it["index"] for it in good], dtype=torch.long),
        failed=failed,
    )


class FaceLoader:
    """A DataLoader over a FaceDataset whose iteration records failed items in ``dataset.skipped``
    (in the main process, so it works with any ``num_workers``)."""

    def __init__(self, dataset: FaceDataset, loader: torch.utils.data.DataLoader):
        self.dataset = dataset
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            if batch.failed and hasattr(self.dataset, "record_failures"):
                self.dataset.record_failures(batch.failed)
            yield batch


def make_loader(dataset: FaceDataset, batch_size: int = 64, num_workers: int = 0, device=None,
                pin_memory: bool | None = None, shuffle: bool = False, **kwargs) -> FaceLoader:
    """A loader of `FaceBatch`es. ``pin_memory`` defaults to True when ``device`` is CUDA (or,
    with no device, when CUDA is available)."""
    if pin_memory is None:
        pin_memory = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    if num_workers > 0:
        kwargs.setdefault("persistent_workers", False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                         num_workers=num_workers, collate_fn=collate_faces,
                                         pin_memory=pin_memory, **kwargs)
    return FaceLoader(dataset, loader)
