"""GenFusionVideoPipeline: preprocessing and sampling vs the authors' outputs, metric depth, I/O, chunking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from video_fixtures import load_cases

from genfusion_ns.video.pipeline import GenFusionVideoPipeline
from genfusion_ns.video.preprocess import (
    clip_preprocess,
    clip_windows,
    depth_to_disparity_code,
    disparity_code_to_depth,
    null_reference_like,
    pack_rgbd,
    pad_frames,
    rgb_to_model,
    rgbd_frames,
)
from genfusion_ns.video.scheduling import GenFusionDDIMScheduler

SAMPLING_CASES = ("e1", "e2", "e3", "e4", "e5")


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _frames_last(video: torch.Tensor) -> torch.Tensor:
    """Fixture ``[C, T, H, W]`` -> user layout ``[T, H, W, C]``."""
    return video.permute(1, 2, 3, 0)


def _case(name: str) -> tuple[dict, dict, dict]:
    tensors, cases = load_cases()
    prefix = f"repair_{name}."
    case_tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return case_tensors, cases["e_sampling"][name], tensors


# ---------------------------------------------------------------------------------------------- preprocessing


def test_preprocess_matches_authors_case_e():
    tensors, _ = load_cases()
    height, width = tensors["repair.artifact_rgb"].shape[-2:]
    rgb = rgb_to_model(_frames_last(tensors["repair.raw_render_rgb"]), height, width)
    torch.testing.assert_close(rgb, tensors["repair.artifact_rgb"], atol=1e-6, rtol=0)
    code, disparity_range = depth_to_disparity_code(tensors["repair.raw_render_depth"][0], height, width)
    torch.testing.assert_close(code, tensors["repair.artifact_depth"], atol=1e-6, rtol=0)
    assert disparity_range is not None and disparity_range.low < disparity_range.high
    reference = rgb_to_model(_frames_last(tensors["repair.raw_ref"]), height, width)
    torch.testing.assert_close(reference, tensors["repair.ref_frames"], atol=1e-6, rtol=0)


def test_clip_preprocess_matches_authors_case_c():
    tensors, cases = load_cases()
    atol = float(cases["c_clip"]["recommended_tolerance"]["preprocessed"]["atol"])
    expected = tensors["clip.preprocessed"]
    ours = clip_preprocess(tensors["clip.image"])
    torch.testing.assert_close(ours, expected, atol=atol, rtol=0)
    # Without the antialias blur (plain bicubic squash) the result is clearly different: the test can fail.
    plain = F.interpolate(tensors["clip.image"], size=(224, 224), mode="bicubic", align_corners=True)
    mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    assert ((((plain + 1) / 2 - mean) / std) - expected).abs().max() > 100 * atol


def test_depth_code_round_trip_is_metric():
    depth = torch.tensor([[[2.0, 4.0], [0.0, 8.0]]])
    code, disparity_range = depth_to_disparity_code(depth, 2, 2)
    assert code[0, 0, 1, 0] == -1  # empty -> far
    assert code[0, 0, 0, 0] == 1  # nearest -> +1
    back = disparity_code_to_depth(code[0], disparity_range, 2, 2)
    valid = depth > 0
    torch.testing.assert_close(back[valid], depth[valid])
    assert back[~valid].item() == pytest.approx(8.0)  # empty comes back at the farthest depth of the clip
    flat = torch.tensor([[[3.0, 0.0], [3.0, 3.0]]])  # one depth value: a degenerate range still inverts
    flat_code, flat_range = depth_to_disparity_code(flat, 2, 2)
    torch.testing.assert_close(
        disparity_code_to_depth(flat_code[0], flat_range, 2, 2)[flat > 0], flat[flat > 0]
    )
    empty_code, empty_range = depth_to_disparity_code(torch.zeros(1, 2, 2), 2, 2)
    assert empty_range is None and (empty_code == -1).all()
    assert (disparity_code_to_depth(empty_code[0], None, 2, 2) == 0).all()
    with pytest.raises(ValueError, match=">= 0"):
        depth_to_disparity_code(-depth, 2, 2)


def test_depth_code_in_a_given_range_is_clamped_and_matches_the_own_range():
    """Training codes a target clip in its artifact's range: the same code as the clip's own range when they
    agree, clamped to [-1, 1] outside it, empty pixels still -1."""
    depth = torch.tensor([[[2.0, 4.0], [0.0, 8.0]]])
    own_code, own_range = depth_to_disparity_code(depth, 2, 2)
    given_code, given_range = depth_to_disparity_code(depth, 2, 2, own_range)
    assert given_range == own_range and torch.equal(given_code, own_code)
    wider = torch.tensor([[[1.0, 4.0], [0.0, 16.0]]])
    code, _ = depth_to_disparity_code(wider, 2, 2, own_range)
    assert code[0, 0, 0, 0] == 1 and code[0, 0, 1, 1] == -1 and code[0, 0, 1, 0] == -1


def test_rgbd_packing_and_padding_conventions():
    """RGB-D is one 4-channel image with depth last; the VAE sees frames (clip by clip for a batch); short
    videos repeat their last frame; the null reference is mid-grey (0 in [-1, 1])."""
    rgb, depth = torch.randn(2, 3, 5, 4, 4), torch.randn(2, 1, 5, 4, 4)
    packed = pack_rgbd(rgb[0], depth[0])
    assert packed.shape == (4, 5, 4, 4) and torch.equal(packed[3], depth[0, 0])
    frames = rgbd_frames(rgb, depth)
    assert frames.shape == (10, 4, 4, 4) and torch.equal(frames[7], pack_rgbd(rgb[1], depth[1])[:, 2])
    assert torch.equal(rgbd_frames(rgb[0], depth[0]), packed.transpose(0, 1))
    video = torch.arange(3.0)[:, None]
    assert pad_frames(video, 5)[:, 0].tolist() == [0.0, 1.0, 2.0, 2.0, 2.0] and pad_frames(video, 2) is video
    assert (null_reference_like(rgb[0, :, 0]) == 0).all()


def test_clip_windows_cover_every_frame_once():
    assert clip_windows(3, 4) == [(0, 0)]
    assert clip_windows(8, 4) == [(0, 0), (4, 4)]
    assert clip_windows(10, 4) == [(0, 0), (4, 4), (6, 8)]
    for total in range(1, 40):
        produced = []
        for start, first_new in clip_windows(total, 16):
            produced.extend(range(first_new, min(start + 16, total)))
        assert produced == list(range(total))


# ---------------------------------------------------------------------------------------------- sampling loop


class ReplayUNet(nn.Module):
    """Returns the authors' recorded v predictions and checks every input the pipeline feeds the UNet."""

    def __init__(self, case: dict, c_concat: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor):
        super().__init__()
        self.case, self.c_concat, self.cond, self.uncond = case, c_concat, cond, uncond
        self.calls = 0
        self.dtype, self.device = torch.float32, torch.device("cpu")

    def forward(self, sample, timestep, encoder_hidden_states, fps):
        i = self.calls
        self.calls += 1
        assert sample.shape[0] == 2, "both CFG branches must be one batch"
        assert int(timestep[0]) == int(self.case["step_timesteps"][i]) and fps == 30
        for branch in range(2):
            torch.testing.assert_close(sample[branch, :4], self.case["step_x_in"][i][0], atol=3e-4, rtol=0)
            torch.testing.assert_close(sample[branch, 4:], self.c_concat[0], atol=0, rtol=0)
        torch.testing.assert_close(encoder_hidden_states, torch.cat([self.uncond, self.cond]), atol=0, rtol=0)
        v = torch.cat([self.case["step_v_uncond"][i], self.case["step_v_cond"][i]])
        return SimpleNamespace(sample=v)


@pytest.mark.parametrize("name", SAMPLING_CASES)
def test_sampling_loop_replays_authors_case(name: str):
    """The loop alone (CFG, rescale, DDIM, dynamic rescale) on the authors' recorded v predictions."""
    case, info, _ = _case(name)
    settings = info["settings"]
    replay = ReplayUNet(case, case["c_concat"], case["cond_context"], case["uncond_context"])
    pipe = GenFusionVideoPipeline(
        unet=replay,
        image_proj=None,
        image_encoder=None,
        vae=None,
        scheduler=GenFusionDDIMScheduler(),
        num_frames=case["x_T"].shape[2],
        height=64,
        width=96,
    )
    pipe.set_progress_bar_config(disable=True)
    scheduler = GenFusionDDIMScheduler(timestep_spacing=settings["timestep_spacing"])
    scheduler.set_timesteps(settings["ddim_steps_argument"])
    assert scheduler.timesteps.tolist() == settings["timesteps_sampling_order"]
    final = pipe.denoise(
        case["x_T"],
        case["c_concat"],
        case["cond_context"],
        case["uncond_context"],
        scheduler,
        guidance_scale=settings["unconditional_guidance_scale"],
        guidance_rescale=settings["guidance_rescale"],
        eta=settings["ddim_eta"],
        step_noises=case.get("step_noise"),
    )
    assert replay.calls == len(settings["timesteps_sampling_order"])
    atol = info["recommended_tolerance"]["final_latent"]["atol"]
    torch.testing.assert_close(final, case["final_latent"], atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def converted_fixture_pipeline() -> GenFusionVideoPipeline:
    """The fixture's authors'-format checkpoint converted to a pipeline (in memory, float32)."""
    from video_fixtures import checkpoint_path, fixture_dir

    from genfusion_ns.video.convert import build_pipeline, load_components
    from genfusion_ns.video.models import load_model_config

    components, config = load_components(checkpoint_path(), load_model_config(fixture_dir() / "config.json"))
    pipe = build_pipeline(components, config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_reference_contexts_match_authors(converted_fixture_pipeline):
    case, _, tensors = _case("e1")
    context, uncond = converted_fixture_pipeline.encode_reference(tensors["repair.ref_frames"][:, 0])
    torch.testing.assert_close(context, case["cond_context"], atol=5e-5, rtol=0)
    torch.testing.assert_close(uncond, case["uncond_context"], atol=5e-5, rtol=0)


@pytest.mark.parametrize("name", SAMPLING_CASES)
def test_repair_reproduces_authors_case(converted_fixture_pipeline, name: str):
    """Raw renders in, through preprocessing, CLIP, the VAE posterior sample, the loop and decoding."""
    pipe = converted_fixture_pipeline
    case, info, tensors = _case(name)
    settings, tol = info["settings"], info["recommended_tolerance"]
    out = pipe(
        _frames_last(tensors["repair.raw_render_rgb"]),
        tensors["repair.raw_render_depth"][0],
        _frames_last(tensors["repair.raw_ref"])[0],
        num_inference_steps=settings["ddim_steps_argument"],
        guidance_scale=settings["unconditional_guidance_scale"],
        guidance_rescale=settings["guidance_rescale"],
        eta=settings["ddim_eta"],
        timestep_spacing=settings["timestep_spacing"],
        latents=case["x_T"],
        condition_noise=case["c_concat_sample_noise"].transpose(0, 1)[None],  # [(T),4,h,w] -> [1,4,T,h,w]
        step_noises=case.get("step_noise"),
        output_type="pt",
    )
    torch.testing.assert_close(out.latents, case["final_latent"], atol=tol["final_latent"]["atol"], rtol=0)
    torch.testing.assert_close(
        out.depth_code, case["out_depth_pm1"][0], atol=tol["out_depth_pm1"]["atol"], rtol=0
    )
    # The authors' reciprocal output, compared through 1/out_depth as the fixture README prescribes.
    inverse_depth = (out.depth_code + 1.0) / 2.0 + 1e-6
    torch.testing.assert_close(inverse_depth, 1.0 / case["out_depth"][0], atol=3e-4, rtol=0)
    decoded = pipe.decode_latents(out.latents)
    torch.testing.assert_close(
        decoded[:3].clamp(-1, 1), case["out_rgb_pm1"], atol=tol["out_rgb_pm1"]["atol"], rtol=0
    )
    assert out.rgb.shape == (*tensors["repair.raw_render_rgb"].shape[1:], 3)  # back at the render resolution
    assert out.depth.shape == tensors["repair.raw_render_depth"].shape[1:]


# ---------------------------------------------------------------------------------------------- metric depth


class BlockVAE(nn.Module):
    """Exact autoencoder for 8x8-block-constant frames: block mean in, nearest upsampling out, no variance."""

    def __init__(self, scale: int = 8):
        super().__init__()
        self.scale = scale
        self.config = SimpleNamespace(block_out_channels=[1] * 4, latent_channels=4)
        self.dtype, self.device = torch.float32, torch.device("cpu")

    def encode(self, frames):
        mean = F.avg_pool2d(frames, self.scale)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    def decode(self, latents):
        return SimpleNamespace(
            sample=latents.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)
        )


class OracleUNet(nn.Module):
    """Predicts the v whose x0 is exactly the condition latent, whatever the noisy input."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod
        self.dtype, self.device = torch.float32, torch.device("cpu")

    def forward(self, sample, timestep, encoder_hidden_states, fps):
        alpha = float(self.alphas_cumprod[int(timestep[0])])
        noisy, condition = sample[:, :4], sample[:, 4:]
        return SimpleNamespace(sample=(alpha**0.5 * noisy - condition) / (1 - alpha) ** 0.5)


def _identity_pipeline() -> GenFusionVideoPipeline:
    tiny = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    components = {**tiny.components, "unet": OracleUNet(tiny.scheduler.alphas_cumprod), "vae": BlockVAE()}
    settings = {k: v for k, v in tiny.config.items() if not k.startswith("_") and k not in components}
    pipe = GenFusionVideoPipeline(**components, **{**settings, "use_dynamic_rescale": False})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_metric_depth_survives_an_identity_path_with_chunking():
    """Through a path that reproduces its condition, the repaired depth must be the input metric depth.

    The video is 2.5 model clips long and every frame has its own depth scale, so wrong un-normalisation (the
    authors' ``1 / n``), mixing up per-clip ranges or misplacing the overlapping tail clip all fail here.
    """
    pipe = _identity_pipeline()
    frames = pipe.config.num_frames * 2 + pipe.config.num_frames // 2
    height, width = pipe.config.height * 2, pipe.config.width * 2  # resized to the model and back
    generator = torch.Generator().manual_seed(0)
    blocks = 2.0 + 2.0 * torch.rand(frames, height // 16, width // 16, generator=generator)
    depth = blocks.repeat_interleave(16, 1).repeat_interleave(16, 2) * (
        1.0 + 0.3 * torch.arange(frames)
    ).view(-1, 1, 1)
    depth[:, :16, :16] = 0.0  # an empty block per frame
    rgb = torch.rand(frames, 1, 1, 3, generator=generator).expand(frames, height, width, 3).contiguous()
    reference = torch.rand(40, 50, 3, generator=generator)
    num_clips = len(clip_windows(frames, pipe.config.num_frames))
    out = pipe(
        rgb,
        depth,
        reference,
        num_inference_steps=25,
        eta=0.0,
        output_type="pt",
        latents=torch.zeros(num_clips, *pipe.latent_shape),
        generator=generator,
    )
    assert out.depth.shape == depth.shape and out.rgb.shape == rgb.shape
    assert out.latents.shape == (num_clips, *pipe.latent_shape)
    valid = depth > 0
    torch.testing.assert_close(out.depth[valid], depth[valid], rtol=2e-3, atol=0)
    torch.testing.assert_close(out.rgb, rgb, atol=2e-3, rtol=0)
    # Empty input pixels come back at the farthest depth of their clip (clamped disparity code).
    assert torch.all(out.depth[~valid] > 0)


# ---------------------------------------------------------------------------------------------- tiny model


def _tiny_inputs(frames: int, generator: torch.Generator):
    rgb = torch.rand(frames, 40, 60, 3, generator=generator)
    depth = 1.0 + 3.0 * torch.rand(frames, 40, 60, generator=generator)
    depth[:, :5] = 0.0
    reference = torch.rand(48, 64, 3, generator=generator)
    return rgb, depth, reference


def test_tiny_pipeline_save_load_round_trip(tmp_path):
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    rgb, depth, reference = _tiny_inputs(pipe.config.num_frames, torch.Generator().manual_seed(1))
    kwargs = {"num_inference_steps": 5, "output_type": "np"}
    before = pipe(
        rgb.numpy(), depth.numpy(), reference.numpy(), generator=torch.Generator().manual_seed(3), **kwargs
    )
    assert before.rgb.shape == (pipe.config.num_frames, 40, 60, 3) and before.depth.shape == depth.shape
    assert np.isfinite(before.rgb).all() and np.isfinite(before.depth).all()
    assert (before.rgb >= 0).all() and (before.rgb <= 1).all()

    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "model_index.json").is_file()
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = GenFusionVideoPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert (
        type(loaded.scheduler) is GenFusionDDIMScheduler
        and loaded.config.num_frames == pipe.config.num_frames
    )
    after = loaded(
        rgb.numpy(), depth.numpy(), reference.numpy(), generator=torch.Generator().manual_seed(3), **kwargs
    )
    np.testing.assert_array_equal(before.rgb, after.rgb)
    np.testing.assert_array_equal(before.depth, after.depth)
    np.testing.assert_array_equal(before.latents, after.latents)


def test_tiny_pipeline_randomness_and_explicit_noise():
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    rgb, depth, reference = _tiny_inputs(pipe.config.num_frames + 2, torch.Generator().manual_seed(1))
    shape = (2, *pipe.latent_shape)  # 2 clips for T = F + 2
    x_t = torch.randn(shape)
    condition_noise = torch.randn(shape)
    run = {"num_inference_steps": 1, "output_type": "latent", "eta": 0.0}
    a = pipe(rgb, depth, reference, latents=x_t, condition_noise=condition_noise, **run)
    b = pipe(rgb, depth, reference, latents=x_t, condition_noise=condition_noise, **run)
    torch.testing.assert_close(a.latents, b.latents, atol=0, rtol=0)
    assert a.rgb is None and a.latents.shape == shape
    pipe.enable_vae_slicing()  # frame-by-frame VAE passes: same result
    sliced = pipe(
        rgb, depth, reference, latents=x_t, condition_noise=condition_noise, vae_chunk_size=3, **run
    )
    pipe.disable_vae_slicing()
    torch.testing.assert_close(sliced.latents, a.latents, atol=1e-5, rtol=0)
    clips = pipe.prepare_clips(rgb, depth)
    precomputed = torch.cat(
        [pipe.encode_condition(c.rgb_code, c.depth_code, noise=n) for c, n in zip(clips, condition_noise)]
    )
    given = pipe(rgb, depth, reference, latents=x_t, condition_latents=precomputed, **run)
    torch.testing.assert_close(given.latents, a.latents, atol=1e-6, rtol=0)
    c = pipe(rgb, depth, reference, latents=x_t, condition_noise=torch.randn(shape), **run)
    assert (a.latents - c.latents).abs().max() > 1e-3  # the posterior noise is used
    g1 = pipe(rgb, depth, reference, generator=torch.Generator().manual_seed(7), **run)
    g2 = pipe(rgb, depth, reference, generator=torch.Generator().manual_seed(7), **run)
    torch.testing.assert_close(g1.latents, g2.latents, atol=0, rtol=0)


def test_bad_inputs_give_clear_errors():
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    rgb, depth, reference = _tiny_inputs(4, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"artifact_depth must have shape \[T, H, W\]"):
        pipe(rgb, depth[:, :10], reference)
    with pytest.raises(ValueError, match=r"artifact_rgb must have shape \[T, H, W, 3\]"):
        pipe(rgb.permute(0, 3, 1, 2), depth, reference)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\].*divide 8-bit images by 255"):
        pipe(rgb * 255, depth, reference)
    with pytest.raises(ValueError, match="output_type"):
        pipe(rgb, depth, reference, output_type="pil")
    with pytest.raises(ValueError, match="outside the 1000 training timesteps"):
        pipe(rgb, depth, reference, num_inference_steps=3)
    with pytest.raises(ValueError, match="latents must have 5 dims"):
        pipe(rgb, depth, reference, num_inference_steps=2, timestep_spacing="leading", latents=torch.zeros(4))


def test_missing_hub_model_names_what_to_download():
    with pytest.raises(OSError, match="genfusion-convert") as error:
        GenFusionVideoPipeline.from_pretrained("genfusion-test/not-a-cached-model", local_files_only=True)
    assert "Sibo2rr/GenFusion-GenerationModel" in str(error.value)


@pytest.mark.slow
def test_full_architecture_builds_on_meta():
    """The released model's shape: 16 frames at 960x512, 1,438,854,980 UNet parameters (reference §4)."""
    pipe = GenFusionVideoPipeline.from_config_name("full", device="meta")
    assert pipe.latent_shape == (4, 16, 64, 120)
    assert (pipe.config.fps, pipe.config.latent_scale_factor) == (30, 0.18215)
    assert sum(p.numel() for p in pipe.unet.parameters()) == 1_438_854_980


def test_low_precision_components_keep_float32_sampler_and_outputs():
    """bf16 networks (the GPU setting; bf16 also runs on CPU): the dtype comes from the components, the
    scheduler arithmetic and the outputs stay float32, and the result stays close to the float32 run."""
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    rgb, depth, reference = _tiny_inputs(pipe.config.num_frames, torch.Generator().manual_seed(1))
    noise = {
        "latents": torch.randn(1, *pipe.latent_shape),
        "condition_noise": torch.randn(1, *pipe.latent_shape),
    }
    run = {"num_inference_steps": 1, "eta": 0.0, "output_type": "pt", **noise}
    full = pipe(rgb, depth, reference, **run)
    for module in (pipe.unet, pipe.vae, pipe.image_encoder, pipe.image_proj):
        module.to(torch.bfloat16)
    low = pipe(rgb, depth, reference, **run)
    assert low.latents.dtype == low.rgb.dtype == low.depth.dtype == torch.float32
    torch.testing.assert_close(low.rgb, full.rgb, atol=0.1, rtol=0)
    assert 0 < (low.latents - full.latents).abs().max() < 0.5  # really ran in bf16, and sensibly so


def test_strength_below_one_starts_from_the_noised_render():
    from genfusion_ns.video import GenFusionVideoPipeline

    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 64, 96, 3, generator=generator)
    depth = 1.0 + torch.rand(4, 64, 96, generator=generator)
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        full = pipe(rgb, depth, rgb[0], num_inference_steps=10, guidance_scale=1.0, timestep_spacing="trailing",
                    generator=torch.Generator().manual_seed(1), output_type="latent")
        full_calls = len(calls)
        calls.clear()
        partial = pipe(rgb, depth, rgb[0], num_inference_steps=10, guidance_scale=1.0, timestep_spacing="trailing",
                       generator=torch.Generator().manual_seed(1), output_type="latent", strength=0.45)
    finally:
        del pipe.unet.forward
    assert full_calls == 10 and len(calls) == 4  # trailing timesteps 999, 899, ... : 4 of them are <= 0.45 * 999
    condition = pipe.encode_condition(pipe.prepare_clips(rgb, depth)[0].rgb_code,
                                      pipe.prepare_clips(rgb, depth)[0].depth_code,
                                      generator=torch.Generator().manual_seed(1))
    # Partial sampling stays nearer the render's latent than sampling from pure noise does.
    near = (partial.latents[0] - condition[0]).pow(2).mean()
    far = (full.latents[0] - condition[0]).pow(2).mean()
    assert near < far
    with pytest.raises(ValueError, match="strength"):
        pipe(rgb, depth, rgb[0], num_inference_steps=2, strength=0.0)


def test_residual_decode_adds_the_models_change_to_the_render():
    from genfusion_ns.video import GenFusionVideoPipeline

    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.residual_decode is False  # the authors' behaviour unless a model asks for it
    generator = torch.Generator().manual_seed(2)
    rgb = torch.rand(4, 64, 96, 3, generator=generator)
    depth = 1.0 + torch.rand(4, 64, 96, generator=generator)
    kwargs = dict(num_inference_steps=2, guidance_scale=1.0, timestep_spacing="trailing", output_type="pt")
    plain = pipe(rgb, depth, rgb[0], generator=torch.Generator().manual_seed(3), **kwargs)
    residual = pipe(rgb, depth, rgb[0], generator=torch.Generator().manual_seed(3), residual_decode=True, **kwargs)
    assert torch.allclose(plain.latents, residual.latents)  # same sampling, only the decoding differs
    clip = pipe.prepare_clips(rgb, depth)[0]
    condition = pipe.encode_condition(clip.rgb_code, clip.depth_code, generator=torch.Generator().manual_seed(3))
    change = pipe.decode_latents(plain.latents[:1]) - pipe.decode_latents(condition)
    expected = ((clip.rgb_code + change[:3]).clamp(-1, 1) + 1) / 2  # back to [0, 1] at the model resolution
    assert torch.allclose(residual.rgb.permute(3, 0, 1, 2), expected, atol=1e-4)
