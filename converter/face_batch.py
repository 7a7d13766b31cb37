"""A verification batch of real faces: MTCNN crops of the photos in a folder, standardized as the
model expects (per-image prewhitening for Sandberg's 2017 128-d models, fixed (x - 127.5) / 128
for the 2018 512-d ones), NHWC float32 as the TF graph takes it. Reviewers trust parity on faces
more than on noise; the random batch (verify.make_batch) stays the default."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConversionError

MAX_IMAGES = 64   # a verification batch, not a dataset: both graphs hold every end point of it


@dataclass
class FaceBatch:
    images: np.ndarray                  # (N, S, S, 3) float32, standardized
    files: list[str]                    # relative to the folder, in batch order
    standardization: str
    skipped: dict[str, str] = field(default_factory=dict)   # file -> why (no face, unreadable)

    def describe(self, folder) -> str:
        return (f"{len(self.files)} MTCNN face crops of the photos in {folder} "
                f"({self.standardization} standardization"
                + (f"; {len(self.skipped)} skipped: " + ", ".join(f"{f} ({why})" for f, why in
                                                              sorted(self.skipped.items())) if self.skipped else "")
                + ")")


def standardization_for(embedding_size: int) -> str:
    """Sandberg's 2017 models (128-d) were trained on prewhitened crops, the 2018 ones (512-d) on
    fixed standardization (REFERENCE.md, models/registry.json `preprocessing`)."""
    return "prewhiten" if embedding_size == 128 else "fixed"


def face_batch(folder, standardization: str, *, image_size: int = 160, margin: int = 14,
               limit: int = MAX_IMAGES) -> FaceBatch:
    """MTCNN crops of the first `limit` photos of `folder` (searched recursively, sorted; equal-sized
    photos detected as one batch); photos without a face are skipped and named."""
    import torch

    from ..models.data.datasets import ImageLoadError, is_image_file, load_image
    from ..models.data.embed import Detector
    from ..models.data.preprocessing import standardize

    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: --images needs a folder of photos")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise ConversionError(f"{folder}: no image files found")
    loaded, skipped = {}, {}
    for path in paths:
        if len(loaded) >= limit:    # a verification batch, not a dataset
            break
        rel = path.relative_to(folder).as_posix()
        try:
            loaded[rel] = load_image(path)
        except ImageLoadError as e:
            skipped[rel] = str(e)
    names = list(loaded)
    found = Detector(image_size=image_size, margin=margin)([loaded[n] for n in names])   # batched by size
    crops, files = [], []
    for name, crop in zip(names, found):
        if crop is None:
            skipped[name] = "no face detected"
        else:
            crops.append(crop)
            files.append(name)
    if not crops:
        raise ConversionError(f"{folder}: no face detected in any of {len(paths)} photos")
    batch = standardize(torch.stack(crops).to(torch.float32), standardization)   # (N, 3, S, S)
    images = batch.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    return FaceBatch(images, files, standardization, skipped)
