"""Loss terms of the GenFusion 2DGS recipe, as plain functions on image tensors.

Shapes follow nerfstudio outputs: images ``[H, W, 3]``, single-channel maps ``[H, W, 1]``. Every function returns a
scalar tensor and is differentiable w.r.t. the rendered inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import Tensor


def photometric_loss(pred: Tensor, target: Tensor, lambda_dssim: float) -> Tensor:
    """(1 - lambda) * L1 + lambda * (1 - SSIM), SSIM with an 11x11 Gaussian window (sigma 1.5) as in 3DGS/2DGS."""
    if pred.shape != target.shape:
        raise ValueError(f"Rendered image {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
    l1 = (pred - target).abs().mean()
    if lambda_dssim == 0.0:
        return l1
    similarity = ssim(_to_nchw(pred), _to_nchw(target), data_range=1.0, size_average=True)
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - similarity)


def depth_distortion_loss(distortion: Tensor) -> Tensor:
    """2DGS depth distortion: the mean over pixels of the per-pixel distortion map produced by the rasterizer."""
    return distortion.mean()


def normal_consistency_loss(normals: Tensor, surf_normals: Tensor) -> Tensor:
    """2DGS normal consistency: mean of 1 - <rendered normal, normal of the rendered depth surface>.

    Both maps come alpha-weighted from the rasterizer (empty pixels are zero vectors and contribute 1 - 0 = 1 with no
    gradient, exactly as in 2DGS); the depth-derived normal is detached so the term aligns the surfels to the surface.
    """
    return (1.0 - (normals * surf_normals.detach()).sum(dim=-1)).mean()


def metric_depth_l1(pred_depth: Tensor, target_depth: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean absolute error between rendered and known metric depth over valid pixels (target > 0 and ``valid``)."""
    mask = _valid_depth_mask(target_depth, valid)
    if not mask.any():
        return pred_depth.sum() * 0.0
    return (pred_depth[mask] - target_depth[mask]).abs().mean()


def scale_shift_invariant_depth_loss(
    pred_depth: Tensor,
    target_depth: Tensor,
    valid: Tensor | None = None,
    num_bands: int = 32,
    gradient_weight: float = 0.5,
    eps: float = 1e-6,
) -> Tensor:
    """Depth loss that ignores an unknown affine map of disparity -- for monocular or generated depth.

    The authors' recipe (``depth_loss_utils.py``): convert both depths to disparity, cut the image into
    ``num_bands`` horizontal bands, fit per band the scale s and shift b that best map the rendered disparity onto the
    target disparity (closed-form least squares; the gradient flows through s and b), then penalise the squared
    residual plus ``gradient_weight`` x the L1 of the residual's horizontal and vertical differences.

    Unlike the authors' code, pixels without rendered geometry (depth <= 0), invalid targets and pixels outside
    ``valid`` are excluded from the fit and the loss; in their code empty pixels become disparity 1e6 and dominate
    their band's fit. Bands with fewer than two valid pixels contribute nothing.

    Args:
        pred_depth: rendered depth ``[H, W]`` or ``[H, W, 1]``.
        target_depth: target depth-like map (any positive depth, up to scale and shift in disparity), same shape.
        valid: optional boolean mask, same shape.
    """
    pred = _as_hw(pred_depth)
    target = _as_hw(target_depth)
    if pred.shape != target.shape:
        raise ValueError(f"Rendered depth {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape.")
    if num_bands < 1:
        raise ValueError(f"num_bands must be >= 1, got {num_bands}.")
    height = pred.shape[0]
    mask = (pred > 0) & torch.isfinite(pred) & _valid_depth_mask(target, None if valid is None else _as_hw(valid))
    mask_f = mask.to(pred.dtype)
    pred_disp = torch.where(mask, 1.0 / (pred + eps), torch.zeros_like(pred))
    target_disp = torch.where(mask, 1.0 / (target + eps), torch.zeros_like(target))

    bands = min(num_bands, height)  # contiguous row bands, as equal as the height allows
    band_of_row = torch.div(torch.arange(height, device=pred.device) * bands, height, rounding_mode="floor")

    def per_band(x: Tensor) -> Tensor:
        # float64 sums: the 2x2 normal equations are badly conditioned in float32 for near-constant disparity.
        rows = x.double().sum(dim=1)  # [H]
        return torch.zeros(bands, device=x.device, dtype=torch.float64).index_add(0, band_of_row, rows)

    a00 = per_band(mask_f * pred_disp * pred_disp)
    a01 = per_band(mask_f * pred_disp)
    a11 = per_band(mask_f)
    b0 = per_band(mask_f * pred_disp * target_disp)
    b1 = per_band(mask_f * target_disp)
    det = a00 * a11 - a01 * a01
    solvable = (det.abs() > 1e-12) & (a11 >= 2)
    safe_det = torch.where(solvable, det, torch.ones_like(det))
    scale = torch.where(solvable, (a11 * b0 - a01 * b1) / safe_det, torch.zeros_like(det)).to(pred.dtype)
    shift = torch.where(solvable, (-a01 * b0 + a00 * b1) / safe_det, torch.zeros_like(det)).to(pred.dtype)

    used = mask & solvable[band_of_row][:, None]
    if not used.any():
        return pred_depth.sum() * 0.0
    residual = (scale[band_of_row][:, None] * pred_disp + shift[band_of_row][:, None] - target_disp) * used
    count = used.sum()
    data_term = (residual**2).sum() / count
    if gradient_weight == 0.0:
        return data_term
    grad_x = (residual[:, 1:] - residual[:, :-1]).abs() * (used[:, 1:] & used[:, :-1])
    grad_y = (residual[1:, :] - residual[:-1, :]).abs() * (used[1:, :] & used[:-1, :])
    return data_term + gradient_weight * (grad_x.sum() + grad_y.sum()) / count


def _valid_depth_mask(target_depth: Tensor, valid: Tensor | None) -> Tensor:
    mask = (target_depth > 0) & torch.isfinite(target_depth)
    if valid is not None:
        if valid.shape != target_depth.shape:
            raise ValueError(f"Depth mask {tuple(valid.shape)} does not match depth {tuple(target_depth.shape)}.")
        mask = mask & valid.bool()
    return mask


def _as_hw(x: Tensor) -> Tensor:
    if x.dim() == 3 and x.shape[-1] == 1:
        return x[..., 0]
    if x.dim() != 2:
        raise ValueError(f"Expected a [H, W] or [H, W, 1] map, got shape {tuple(x.shape)}.")
    return x


def _to_nchw(image: Tensor) -> Tensor:
    return image.permute(2, 0, 1).unsqueeze(0)


def resize_nearest(image: Tensor, height: int, width: int) -> Tensor:
    """Nearest-neighbour resize of an ``[H, W, C]`` map (depth must not be blurred across edges)."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return F.interpolate(image.permute(2, 0, 1)[None].float(), size=(height, width), mode="nearest")[0].permute(1, 2, 0)
