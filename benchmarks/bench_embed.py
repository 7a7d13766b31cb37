"""Throughput of `facenet embed`: images/s on face crops (batch 64) and on raw photos with --detect.

Inputs are built from scikit-image's astronaut photo (crops of the face with jitter; the whole photo,
jittered, for --detect); the model is a seeded random-init InceptionResNetV1 (speed does not depend
on the weights' values). Reported:

- ``embed_crops_images_per_s``: the pipeline in process (decode, resize, standardize, model), batch 64,
  after one warm-up batch, with the default engine (``model.fuse()``); ``embed_crops_plain_images_per_s``:
  the same with ``engine='plain'`` (the model as converted), timed right after it;
- ``embed_crops_cli_images_per_s`` / ``embed_crops_cli_wall_s``: the console script end to end,
  including interpreter start, torch import and weight loading;
- ``embed_detect_images_per_s``: photos -> MTCNN on the main process (batched by size) -> model;
- ``embed_detect_in_workers_images_per_s``: the alternative, MTCNN run per image inside 2 DataLoader
  workers (one torch thread each), for the placement decision.

    python benchmarks/bench_embed.py [--crops 128] [--photos 16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from facenet_tf2pt.models.data.datasets import FaceDataset, make_loader  # noqa: E402
from facenet_tf2pt.models.data.embed import Embedder  # noqa: E402
from facenet_tf2pt.models.nets.inception_resnet_v1 import InceptionResNetV1  # noqa: E402

FACE_BOX = (150, 20, 330, 200)


def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def build_crops(root: Path, n: int, seed: int = 0) -> None:
    img = _astronaut()
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = FACE_BOX
    for i in range(n):
        d = root / f"person_{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        dx, dy, grow = rng.integers(-15, 16), rng.integers(-15, 16), rng.integers(-10, 20)
        crop = img.crop((x0 + dx - grow, y0 + dy - grow, x1 + dx + grow, y1 + dy + grow)).resize((160, 160))
        if i % 2:
            crop = ImageOps.mirror(crop)
        crop.save(d / f"crop_{i:04d}.jpg", quality=92)


def build_photos(root: Path, n: int, seed: int = 0) -> None:
    img = _astronaut()
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dx, dy = rng.integers(0, 40, 2)
        photo = img.crop((dx, dy, dx + 472, dy + 472))
        if i % 2:
            photo = ImageOps.mirror(photo)
        photo.save(root / f"photo_{i:04d}.jpg", quality=92)


def _time_embed(embedder: Embedder, root: Path, warmup: int = 1) -> tuple[float, int]:
    ds = embedder.dataset(str(root))
    if warmup:
        embedder.embed_tensor(torch.zeros(min(len(ds), embedder.batch_size), 3, 160, 160))
    t = time.perf_counter()
    res = embedder.embed_dataset(ds)
    return time.perf_counter() - t, len(res.paths)


def _cli(*args) -> float:
    exe = REPO / ".venv" / "bin" / "facenet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "facenet_tf2pt.models.cli"]
    t = time.perf_counter()
    r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"facenet {' '.join(map(str, args))} failed: {r.stderr.strip()[-500:]}")
    return wall


def _mtcnn_in_workers(root: Path, model, batch_size: int, workers: int = 2) -> tuple[float, int]:
    from facenet_tf2pt.models.detection.mtcnn import MTCNN
    from facenet_tf2pt.models.data.preprocessing import standardize

    mtcnn = MTCNN(image_size=160, margin=14, post_process=False, device="cpu")

    def transform(img):
        torch.set_num_threads(1)
        return mtcnn(img)

    ds = FaceDataset(str(root), transform=transform)
    t = time.perf_counter()
    n = 0
    with torch.inference_mode():
        for batch in make_loader(ds, batch_size=batch_size, num_workers=workers, device="cpu"):
            if len(batch):
                model(standardize(batch.images, "fixed"))
                n += len(batch)
    return time.perf_counter() - t, n


def run(report: dict, n_crops: int = 128, n_photos: int = 16, batch_size: int = 64) -> dict:
    report.update(device="cpu", torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  batch_size=batch_size, n_crops=n_crops, n_photos=n_photos)
    torch.manual_seed(0)
    model = InceptionResNetV1().eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tmp / "random_init.pt"
        torch.save(model.state_dict(), weights)
        build_crops(tmp / "crops", n_crops)
        build_photos(tmp / "photos", n_photos)

        emb = Embedder(model, "fixed", device="cpu", batch_size=batch_size)
        secs, n = _time_embed(emb, tmp / "crops")
        report["embed_crops_images_per_s"] = round(n / secs, 2)
        secs, n = _time_embed(Embedder(model, "fixed", device="cpu", batch_size=batch_size, engine="plain"),
                              tmp / "crops")
        report["embed_crops_plain_images_per_s"] = round(n / secs, 2)

        wall = _cli("embed", tmp / "crops", "-o", tmp / "crops.npz", "--weights", weights,
                    "--batch-size", batch_size, "--device", "cpu", "-q")
        report["embed_crops_cli_wall_s"] = round(wall, 2)
        report["embed_crops_cli_images_per_s"] = round(n_crops / wall, 2)

        try:
            from facenet_tf2pt.models.detection.mtcnn import MTCNN  # noqa: F401
        except ImportError as e:
            report["embed_detect"] = f"skipped: {e}"
            return report
        det = Embedder(model, "fixed", device="cpu", batch_size=batch_size, detect=True)
        det.detector  # build MTCNN outside the timing
        secs, n = _time_embed(det, tmp / "photos")
        report["embed_detect_images_per_s"] = round(n_photos / secs, 2)
        report["embed_detect_faces_found"] = n
        wall = _cli("embed", tmp / "photos", "-o", tmp / "photos.npz", "--weights", weights, "--detect",
                    "--batch-size", batch_size, "--device", "cpu", "-q")
        report["embed_detect_cli_wall_s"] = round(wall, 2)
        secs, n = _mtcnn_in_workers(tmp / "photos", model, batch_size)
        report["embed_detect_in_workers_images_per_s"] = round(n_photos / secs, 2)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=128)
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)
    report = run({}, n_crops=args.crops, n_photos=args.photos, batch_size=args.batch_size)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
