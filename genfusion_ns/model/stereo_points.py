"""Seed points where the training views agree, for datasets without a sparse point cloud.

A posed capture without ``sparse_pc.ply`` (poses from a phone's AR session, another SfM tool, a hand-written
``transforms.json``) would otherwise start from surfels in a random box, which real captures do not recover from
(measured in docs/benchmarks.md). This is a small plane sweep: for a grid of pixels of every training view, depth
hypotheses spaced evenly in log depth are projected into the two nearest training views; the depth where the
(slightly blurred) colours agree best (refined between hypotheses by a parabola) is kept when the agreement is good and clearly better than at other depths
(textureless pixels, whose colours agree everywhere, are dropped), and not at either end of the sweep. Cameras are nerfstudio's normalised OpenGL
camera-to-world matrices, so the points land in the frame the model trains in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genfusion_ns.axes import flip_camera_axes


@dataclass(frozen=True)
class PlaneSweepSettings:
    """How densely to sweep and how strict the agreement must be."""

    stride: int = 3
    """Pixel spacing of the sampled grid of each view."""
    num_depths: int = 64
    """Depth hypotheses per pixel, evenly spaced in log depth (a constant relative step)."""
    near: float = 0.1
    """Nearest depth, as a fraction of the cameras' extent."""
    far: float = 10.0
    """Farthest depth, as a multiple of the cameras' extent."""
    max_cost: float = 0.06
    """Largest mean absolute colour difference (RGB in [0, 1]) at the kept depth."""
    distinctness: float = 0.5
    """The kept depth's cost must be below this fraction of the median cost over all depths."""
    blur: int = 5
    """Box-filter size applied before comparing colours (a patch comparison, cheaply)."""
    max_points: int = 20000


def _blurred(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[H, W, 3]`` -> ``[1, 3, H, W]`` box-filtered (replicate borders)."""
    chw = image.permute(2, 0, 1)[None]
    if size <= 1:
        return chw
    padded = F.pad(chw, (size // 2,) * 4, mode="replicate")
    return F.avg_pool2d(padded, size, stride=1)


def _sample(image: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear colours ``[N, 3]`` of ``[1, 3, H, W]`` at pixel coordinates, and whether each lies inside."""
    height, width = image.shape[-2:]
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    grid = torch.stack([2 * u / max(width - 1, 1) - 1, 2 * v / max(height - 1, 1) - 1], dim=-1).to(image.dtype)
    colours = F.grid_sample(image, grid.view(1, 1, -1, 2), mode="bilinear", align_corners=True)
    return colours[0, :, 0].T, inside


def plane_sweep_points(
    images: list[torch.Tensor],
    camera_to_worlds: torch.Tensor,
    intrinsics: torch.Tensor,
    settings: PlaneSweepSettings = PlaneSweepSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[M, 3]`` (world) and colours ``[M, 3]`` uint8 where at least two neighbouring views agree.

    Args:
        images: training images ``[H_i, W_i, 3]`` float in [0, 1].
        camera_to_worlds: ``[N, 3, 4]`` OpenGL camera-to-world (nerfstudio's convention).
        intrinsics: ``[N, 4]`` rows ``fx, fy, cx, cy`` in the images' pixels.
    """
    count = len(images)
    if count < 2:
        return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.uint8)
    c2w = flip_camera_axes(camera_to_worlds.double())  # OpenCV axes: x right, y down, z forward
    rotations, centres = c2w[:, :3, :3], c2w[:, :3, 3]
    extent = max(float((centres - centres.mean(0)).norm(dim=-1).max()), 1e-3)
    depths = torch.logspace(math.log10(settings.near * extent), math.log10(settings.far * extent),
                            settings.num_depths, dtype=torch.float64)
    blurred = [_blurred(image.float(), settings.blur) for image in images]
    distances = (centres[:, None] - centres[None]).norm(dim=-1) + torch.eye(count, dtype=torch.float64) * 1e30
    points, colours = [], []
    for i in range(count):
        height, width = images[i].shape[:2]
        v, u = torch.meshgrid(torch.arange(settings.stride // 2, height, settings.stride, dtype=torch.float64),
                              torch.arange(settings.stride // 2, width, settings.stride, dtype=torch.float64),
                              indexing="ij")
        u, v = u.reshape(-1), v.reshape(-1)
        fx, fy, cx, cy = intrinsics[i].double().tolist()
        rays = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=-1) @ rotations[i].T  # [P, 3]
        world = centres[i] + depths[:, None, None] * rays[None]  # [D, P, 3] at z-depth d
        reference, _ = _sample(blurred[i], u, v)
        costs = []
        for j in torch.argsort(distances[i])[: min(2, count - 1)].tolist():
            camera = (world - centres[j]) @ rotations[j]  # world -> camera j (rotation is orthonormal)
            z = camera[..., 2]
            fxj, fyj, cxj, cyj = intrinsics[j].double().tolist()
            uj = fxj * camera[..., 0] / z.clamp_min(1e-9) + cxj
            vj = fyj * camera[..., 1] / z.clamp_min(1e-9) + cyj
            sampled, inside = _sample(blurred[j], uj.reshape(-1).float(), vj.reshape(-1).float())
            cost = (sampled.view(*z.shape, 3) - reference[None].float()).abs().mean(-1)
            costs.append(torch.where(inside.view(z.shape) & (z > 1e-6), cost, torch.full_like(cost, float("inf"))))
        cost = torch.stack(costs).mean(0)  # [D, P]; inf where any neighbour does not see the point
        best_cost, best = cost.min(0)
        finite = torch.where(torch.isfinite(cost), cost, torch.nan)
        typical = torch.nanmedian(finite, dim=0).values
        interior = (best > 0) & (best < settings.num_depths - 1)  # a minimum at either end lies outside the sweep
        keep = (interior & torch.isfinite(best_cost) & (best_cost < settings.max_cost)
                & (best_cost < settings.distinctness * typical))
        pixel = keep.nonzero()[:, 0]
        index = best[pixel]
        before, at, after = (cost[index + k, pixel] for k in (-1, 0, 1))
        curvature = (before - 2 * at + after).clamp_min(1e-9)
        offset = (0.5 * (before - after) / curvature).clamp(-0.5, 0.5)  # parabola through the three costs
        offset = torch.where(torch.isfinite(before) & torch.isfinite(after), offset, torch.zeros_like(offset))
        log_step = math.log(settings.far / settings.near) / (settings.num_depths - 1)
        depth = depths[index] * torch.exp(offset.double() * log_step)
        points.append((centres[i] + depth[:, None] * rays[pixel]).float())
        colours.append(reference[pixel])
    xyz, rgb = torch.cat(points), torch.cat(colours)
    if len(xyz) > settings.max_points:
        chosen = torch.randperm(len(xyz), generator=torch.Generator().manual_seed(0))[: settings.max_points]
        xyz, rgb = xyz[chosen], rgb[chosen]
    return xyz, (rgb.clamp(0, 1) * 255).round().to(torch.uint8)
