"""Target depth for captures without depth files: a local transformers depth model, aligned to the render."""

from __future__ import annotations

import pytest
import torch

from diffusion_train.mono_depth import (
    MonocularDepth,
    MonoDepthUnavailable,
    align_to_render,
    monocular_target_depth,
)


def _depths(frames=3, h=12, w=16):
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([1.5 + xs + 0.5 * ys + 0.2 * k for k in range(frames)])


def test_relative_disparity_is_aligned_per_frame_to_the_render():
    depth = _depths()
    # A relative model: disparity up to a different scale and shift in every frame.
    prediction = torch.stack([(2.0 + k) / d + 0.3 * k for k, d in enumerate(depth)])
    render = depth.clone()
    render[:, :4] = 0.0  # holes in the render do not take part in the fit
    aligned = align_to_render(prediction, "disparity", render)
    assert torch.allclose(aligned, depth, rtol=1e-4)


def test_metric_depth_gets_one_scale_and_bad_inputs_fail_clearly():
    depth = _depths()
    assert torch.allclose(align_to_render(depth * 0.5, "depth", depth), depth, rtol=1e-5)
    with pytest.raises(ValueError, match="renders"):
        align_to_render(depth, "disparity", torch.zeros_like(depth))
    with pytest.raises(ValueError, match="anti-correlates"):
        align_to_render(depth, "disparity", depth)  # depth passed as if it were disparity
    with pytest.raises(MonoDepthUnavailable, match="--mono-depth-model"):
        monocular_target_depth(None, "disparity", torch.rand(1, 4, 4, 3), depth[:1, :4, :4], "cpu")
    with pytest.raises(MonoDepthUnavailable, match="offline"):
        MonocularDepth("nobody/not-in-the-local-cache")


def test_local_transformers_depth_model_runs_through_the_pipeline(tmp_path):
    """A tiny random Depth Anything saved locally stands in for a downloaded checkpoint."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                                 head_hidden_size=8, reassemble_hidden_size=32, patch_size=14)
    DepthAnythingForDepthEstimation(config).save_pretrained(tmp_path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14,
                      do_pad=False).save_pretrained(tmp_path)
    prediction = MonocularDepth(str(tmp_path))(torch.rand(2, 20, 30, 3))
    assert prediction.shape == (2, 20, 30) and torch.isfinite(prediction).all()
