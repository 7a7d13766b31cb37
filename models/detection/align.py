"""Five-point face alignment: a similarity transform (rotation, uniform scale, translation) that
puts MTCNN's landmarks onto a template, then one batched resampling of all faces."""
from __future__ import annotations

import torch

# The widely used 5-point template for a 112 x 112 face crop (left eye, right eye, nose tip,
# left and right mouth corners), in pixel coordinates.
TEMPLATE_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


def template_points(size: int, margin: float = 0.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """The template scaled to a ``size`` x ``size`` crop leaving ``margin`` output pixels in all (5, 2)."""
    t = torch.tensor(TEMPLATE_112, dtype=dtype, device=device)
    return t * ((size - margin) / 112.0) + margin / 2.0


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity maps (K, 2, 3) taking points ``src`` (K, P, 2) (or (P, 2), shared)
    onto ``dst`` (K, P, 2): dst ~ [[a, -b], [b, a]] @ src + t. No reflection."""
    src, dst = src.to(torch.float64), dst.to(torch.float64)
    if src.dim() == 2:
        src = src.unsqueeze(0).expand_as(dst)
    ms, md = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    ps, pd = src - ms, dst - md
    norm = (ps**2).sum((1, 2)).clamp_min(1e-12)
    a = (ps[..., 0] * pd[..., 0] + ps[..., 1] * pd[..., 1]).sum(1) / norm
    b = (ps[..., 0] * pd[..., 1] - ps[..., 1] * pd[..., 0]).sum(1) / norm
    rot = torch.stack((torch.stack((a, -b), -1), torch.stack((b, a), -1)), 1)  # (K, 2, 2)
    t = md.squeeze(1) - (rot @ ms.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat((rot, t.unsqueeze(-1)), dim=2)


def alignment_affine(points: torch.Tensor, size: int, margin: float = 0.0) -> torch.Tensor:
    """Affine maps (K, 2, 3) from output-crop edge coordinates to image edge coordinates that align
    landmarks ``points`` (K, 5, 2) (pixel-index coordinates, as MTCNN returns them) to the template."""
    tmpl = template_points(size, margin, device=points.device) + 0.5
    return similarity_transform(tmpl, points.to(torch.float64) + 0.5)
