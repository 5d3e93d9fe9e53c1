"""Frames of any size and aspect ratio through the video model: letterboxed without distortion, back at their size."""

from __future__ import annotations

import pytest
import torch

from genfusion_ns.fusion.video_model import load_video_pipeline
from genfusion_ns.video.clips import clip_outputs, prepare_clips, smooth_change
from genfusion_ns.video.framing import EMPTY_CODE, Letterbox
from genfusion_ns.video.preprocess import pack_rgbd

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_portrait_and_landscape_frames_keep_their_aspect_ratio():
    portrait = Letterbox.fit(160, 90, 96, 96)
    assert (portrait.inner_height, portrait.inner_width, portrait.top, portrait.left) == (96, 54, 0, 21)
    landscape = Letterbox.fit(120, 160, 96, 96)
    assert (landscape.inner_height, landscape.inner_width, landscape.top, landscape.left) == (72, 96, 12, 0)
    wide_model = Letterbox.fit(90, 160, 64, 96)  # 16:9 into 3:2 is 18.5 % off: letterboxed
    assert (wide_model.inner_height, wide_model.inner_width) == (54, 96)
    video = torch.rand(3, 2, 72, 96)
    padded = landscape.pad(video)
    assert padded.shape == (3, 2, 96, 96)
    assert torch.equal(landscape.crop(padded), video)
    assert (padded[..., :12, :] == EMPTY_CODE).all() and (padded[..., 84:, :] == EMPTY_CODE).all()
    with pytest.raises(ValueError, match="expected frames of 72x96"):
        landscape.pad(torch.rand(3, 2, 96, 96))


def test_near_model_aspect_is_resized_as_the_authors_do():
    authors = Letterbox.fit(540, 960, 320, 512)  # 16:9 into the released 1.6:1 model
    assert authors.is_full_frame and authors.crop(torch.zeros(1, 320, 512)).shape == (1, 320, 512)
    assert Letterbox.fit(96, 96, 96, 96).is_full_frame


def test_clip_codes_are_letterboxed_and_residual_output_returns_the_input_at_its_size():
    rgb = torch.zeros(3, 40, 20, 3)
    rgb[..., 0] = 1.0  # red portrait frames
    rgb[:, 10:20, 5:15] = torch.tensor([0.0, 1.0, 0.0])  # a green 10x10 square
    depth = torch.full((3, 40, 20), 2.0)
    (clip,) = prepare_clips(rgb, depth, length=4, height=16, width=16)
    box = clip.letterbox
    assert (box.inner_height, box.inner_width, box.left) == (16, 8, 4)
    assert (clip.rgb_code[:, :, :, :4] == EMPTY_CODE).all() and (clip.depth_code[:, :, :, 12:] == EMPTY_CODE).all()
    inner = clip.rgb_code[:, :3, :, 4:12]
    green = (inner[1] > 0.5) & (inner[0] < -0.5)
    rows, cols = green[0].any(1).nonzero(), green[0].any(0).nonzero()
    assert len(rows) == len(cols) == 4  # the square stays square (squashed it would be 4 rows x 8 columns)
    decoded = pack_rgbd(clip.rgb_code, clip.depth_code)
    out_rgb, out_depth, code = clip_outputs(decoded, clip)
    assert out_rgb.shape == (3, 40, 20, 3) and out_depth.shape == (3, 40, 20) and code.shape == (3, 16, 8)
    assert torch.allclose(out_rgb[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    residual_rgb, residual_depth, _ = clip_outputs(decoded, clip, unchanged=decoded)
    assert torch.allclose(residual_rgb, rgb, atol=1e-6)  # no change: the input itself, full size, not a resize
    assert torch.allclose(residual_depth, depth, rtol=1e-5)
    changed_rgb, _, _ = clip_outputs(decoded + 0.2, clip, unchanged=decoded)
    assert torch.allclose(changed_rgb[:, 0, 0], torch.tensor([1.0, 0.1, 0.1]), atol=1e-5)  # +0.2 code = +0.1


@pytest.mark.parametrize("size", [(24, 16), (12, 30)])
def test_repair_of_non_square_frames_returns_their_size(size):
    pipe = load_video_pipeline("random-tiny", "cpu")
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, *size, 3, generator=generator)
    depth = torch.rand(3, *size, generator=generator) + 1.0
    out = pipe(rgb, depth, rgb[0], num_inference_steps=2, timestep_spacing="leading", generator=generator,
               output_type="pt")
    assert tuple(out.rgb.shape) == (3, *size, 3) and tuple(out.depth.shape) == (3, *size)
    assert torch.isfinite(out.rgb).all() and torch.isfinite(out.depth).all()


def test_smoothed_change_keeps_its_low_frequencies_and_drops_speckle():
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-0.5, 0.5, 32).view(1, 1, 1, 32).expand(4, 2, 24, 32)
    speckle = 0.3 * torch.randn(4, 2, 24, 32, generator=generator)
    smoothed = smooth_change(ramp + speckle, sigma=2.0)
    assert smoothed.shape == ramp.shape
    assert (smoothed - ramp).abs().mean() < 0.3 * speckle.abs().mean()  # speckle mostly gone
    constant = torch.full((4, 1, 10, 10), 0.25)
    assert torch.allclose(smooth_change(constant, 3.0), constant, atol=1e-6)  # a flat change stays (reflected edges)
    assert torch.equal(smooth_change(speckle, 0.0), speckle)


def test_residual_output_adds_the_smoothed_change():
    rgb = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    depth = torch.full((2, 16, 16), 2.0)
    (clip,) = prepare_clips(rgb, depth, length=2, height=16, width=16)
    decoded = pack_rgbd(clip.rgb_code, clip.depth_code)
    change = torch.zeros_like(decoded)
    change[:3, :, ::2, ::2] = 0.4  # a checkerboard-like speckle with mean 0.1
    sharp, _, _ = clip_outputs(decoded + change, clip, unchanged=decoded)
    smooth, _, _ = clip_outputs(decoded + change, clip, unchanged=decoded, change_sigma=2.0)
    # in colour units the change is half the code: speckle of 0.2 (mean 0.05) becomes nearly flat 0.05
    assert (sharp - rgb).std() > 0.08
    assert (smooth - rgb).clamp(-1, 1)[:, 4:12, 4:12].std() < 0.02
    with pytest.raises(ValueError, match="residual"):
        clip_outputs(decoded, clip, change_sigma=1.0)


def test_pipeline_refuses_change_smoothing_without_residual_decoding():
    pipe = load_video_pipeline("random-tiny", "cpu")
    rgb = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match="residual decoding"):
        pipe(rgb, torch.ones(2, 16, 16), rgb[0], num_inference_steps=1, timestep_spacing="leading", change_sigma=2.0)
