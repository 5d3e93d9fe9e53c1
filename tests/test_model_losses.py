"""Loss functions of the GenFusion 2DGS recipe."""

from __future__ import annotations

import pytest
import torch

from genfusion_ns.model.losses import (
    metric_depth_l1,
    normal_consistency_loss,
    photometric_loss,
    resize_nearest,
    scale_shift_invariant_depth_loss,
)


def smooth_depth(h=32, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (2.0 + xs + 0.5 * ys + 0.1 * torch.rand(h, w, generator=g))[..., None]


def test_photometric_loss_mixes_l1_and_dssim():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(16, 16, 3, generator=g)
    pred = (target + 0.1).clamp(0, 1)
    l1 = (pred - target).abs().mean()
    assert photometric_loss(pred, target, 0.0) == pytest.approx(l1.item())
    full = photometric_loss(pred, target, 1.0)
    mixed = photometric_loss(pred, target, 0.5)
    assert mixed.item() == pytest.approx(0.5 * l1.item() + 0.5 * full.item(), rel=1e-5)
    assert photometric_loss(target, target, 0.5).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        photometric_loss(pred, target[:8], 0.2)


def test_ssi_depth_loss_ignores_affine_disparity_and_detects_structure():
    pred = smooth_depth()
    target_aligned = 1.0 / (3.0 / pred + 0.25)  # disparity 3x + 0.25: same up to scale and shift
    assert scale_shift_invariant_depth_loss(pred, target_aligned).item() == pytest.approx(0.0, abs=1e-6)
    target_other = smooth_depth(seed=1).flip(1)
    assert scale_shift_invariant_depth_loss(pred, target_other).item() > 1e-4


def test_ssi_depth_loss_excludes_empty_and_masked_pixels():
    pred = smooth_depth()
    target = 1.0 / (2.0 / pred + 0.1)
    corrupted_pred = pred.clone()
    corrupted_pred[:4] = 0.0  # no rendered geometry: the authors' code would turn this into disparity 1e6
    assert scale_shift_invariant_depth_loss(corrupted_pred, target).item() == pytest.approx(0.0, abs=1e-6)
    corrupted_target = target.clone()
    corrupted_target[5:9, 3:7] = 50.0
    valid = torch.ones_like(target, dtype=torch.bool)
    assert scale_shift_invariant_depth_loss(pred, corrupted_target).item() > 1e-5
    valid[5:9, 3:7] = False
    assert scale_shift_invariant_depth_loss(pred, corrupted_target, valid).item() == pytest.approx(0.0, abs=1e-6)


def test_ssi_depth_loss_has_gradients_and_fits_per_band():
    pred = smooth_depth().requires_grad_(True)
    target = smooth_depth(seed=3)
    loss = scale_shift_invariant_depth_loss(pred, target, num_bands=4)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # One affine map per band: a target that is affine in disparity with a different map per band costs nothing.
    base = smooth_depth().detach()
    disp = 1.0 / base
    per_band = torch.cat([1.0 / (disp[i * 8 : (i + 1) * 8] * (i + 1) + 0.1 * i) for i in range(4)])
    assert scale_shift_invariant_depth_loss(base, per_band, num_bands=4).item() == pytest.approx(0.0, abs=1e-6)
    assert scale_shift_invariant_depth_loss(base, per_band, num_bands=1).item() > 1e-4


def test_ssi_depth_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        scale_shift_invariant_depth_loss(smooth_depth(), smooth_depth(h=16))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        scale_shift_invariant_depth_loss(torch.ones(2, 3, 4, 5), torch.ones(2, 3, 4, 5))


def test_metric_depth_l1_uses_valid_target_pixels_only():
    pred = torch.full((4, 4, 1), 2.0)
    target = torch.full((4, 4, 1), 1.5)
    target[0] = 0.0  # no depth measured
    assert metric_depth_l1(pred, target).item() == pytest.approx(0.5)
    covered = torch.zeros_like(target, dtype=torch.bool)
    assert metric_depth_l1(pred, target, covered).item() == 0.0


def test_normal_consistency_zero_when_aligned_and_detaches_surface_normal():
    n = torch.nn.functional.normalize(torch.randn(8, 8, 3), dim=-1).requires_grad_(True)
    surf = n.detach().clone().requires_grad_(True)
    assert normal_consistency_loss(n, surf).item() == pytest.approx(0.0, abs=1e-6)
    normal_consistency_loss(n, -surf).backward()
    assert n.grad.abs().sum() > 0 and surf.grad is None


def test_resize_nearest_keeps_values():
    depth = torch.arange(16.0).reshape(4, 4, 1)
    small = resize_nearest(depth, 2, 2)
    assert small.shape == (2, 2, 1) and set(small.flatten().tolist()) <= set(depth.flatten().tolist())
