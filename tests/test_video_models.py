"""GenFusion video networks against the official-code fixture (cases a-d) and their diffusers behaviour.

The fixture weights are loaded through the converter (``load_components``), so these cases also check the key
mapping numerically; the conversion mechanics themselves are tested in ``test_video_convert.py``.
"""

from __future__ import annotations

import json

import pytest
import torch
from video_fixtures import checkpoint_path, fixture_dir, load_cases, load_config, tolerance

from genfusion_ns.video.convert import load_components
from genfusion_ns.video.models import (
    GenFusionResampler,
    GenFusionUNet,
    SplitContextCrossAttnProcessor,
    build_components,
    load_model_config,
    model_settings,
    named_config,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def official():
    """(components converted from the fixture checkpoint, tensors, cases.json, model config)."""
    components, config = load_components(checkpoint_path(), fixture_dir() / "config.json")
    tensors, cases = load_cases()
    return components, tensors, cases, config


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------------ fixture cases


@torch.no_grad()
def test_case_a_unet_forward_matches_official(official):
    components, t, cases, _ = official
    unet = components["unet"]
    out = unet(t["unet.input_concat"], t["unet.timesteps"], t["unet.context"], fps=t["unet.fps"]).sample
    assert _max_err(out, t["unet.out_v"]) < tolerance(cases, "a_unet", "out_v")


@torch.no_grad()
def test_case_a_fps_condition_is_per_sample(official):
    """fps must reach the network per batch element: fps 30 for both samples changes the sample with fps 12."""
    components, t, cases, _ = official
    unet = components["unet"]
    out = unet(t["unet.input_concat"], t["unet.timesteps"], t["unet.context"], fps=30).sample
    assert t["unet.fps"][0] == 30 and t["unet.fps"][1] != 30
    assert _max_err(out[:1], t["unet.out_v"][:1]) < tolerance(cases, "a_unet", "out_v")
    assert _max_err(out[1:], t["unet.out_v"][1:]) > 100 * tolerance(cases, "a_unet", "out_v")


@torch.no_grad()
def test_case_b_resampler_matches_official(official):
    components, t, cases, _ = official
    out = components["image_proj"](t["resampler.in_tokens"])
    assert _max_err(out, t["resampler.out_tokens"]) < tolerance(cases, "b_resampler", "out_tokens")


@torch.no_grad()
def test_case_c_clip_tokens_and_resampled_match_official(official):
    components, t, cases, _ = official
    tokens = components["image_encoder"](pixel_values=t["clip.preprocessed"]).last_hidden_state
    assert _max_err(tokens, t["clip.tokens"]) < tolerance(cases, "c_clip", "tokens")
    resampled = components["image_proj"](tokens)
    assert _max_err(resampled, t["clip.resampled"]) < tolerance(cases, "c_clip", "resampled")


@torch.no_grad()
def test_case_d_vae_posterior_and_decode_match_official(official):
    components, t, cases, config = official
    vae, scale = components["vae"], config.settings.latent_scale_factor
    atol = tolerance(cases, "d_vae", "encode")

    posterior = vae.encode(t["vae.frames"]).latent_dist
    assert _max_err(posterior.mean, t["vae.posterior_mean"]) < atol
    assert _max_err(posterior.logvar, t["vae.posterior_logvar"]) < atol
    assert _max_err(posterior.mean * scale, t["vae.scaled_mean"]) < atol

    # Video: frames folded into the batch (index b*T + t), posterior sample with the stored noise, x scale.
    video = t["vae.video"]
    b, c, frames, h, w = video.shape
    folded = video.permute(0, 2, 1, 3, 4).reshape(b * frames, c, h, w)
    posterior = vae.encode(folded).latent_dist
    latent = (posterior.mean + posterior.std * t["vae.video_sample_noise"]) * scale
    latent = latent.reshape(b, frames, *latent.shape[1:]).permute(0, 2, 1, 3, 4)
    assert _max_err(latent, t["vae.video_latent"]) < atol

    # Decode frame by frame from the scaled latent, all 4 channels, no clamp.
    decode_latent = t["vae.decode_latent"]
    decoded = torch.stack(
        [vae.decode(decode_latent[:, :, i] / scale).sample for i in range(decode_latent.shape[2])], dim=2
    )
    assert _max_err(decoded, t["vae.decoded"]) < tolerance(cases, "d_vae", "decoded")


# ------------------------------------------------------------------------------------------ configs


def test_fixture_config_derives_the_documented_diffusers_kwargs():
    """Deriving from the authors' lvdm config reproduces the fixture's independently written diffusers kwargs."""
    data = load_config()
    config = load_model_config(fixture_dir() / "config.json")
    equivalents = data["diffusers_equivalents"]
    for key, value in equivalents["unet"]["kwargs"].items():
        assert (
            list(config.unet[key]) == list(value) if isinstance(value, list) else config.unet[key] == value
        ), key
    assert config.image_proj == {k: float(v) if k == "ffn_ratio" else v
                                 for k, v in equivalents["resampler"]["kwargs"].items()}  # fmt: skip
    for key, value in equivalents["clip_vision"]["config"].items():
        assert config.image_encoder[key] == value, key
    assert config.vae == equivalents["vae"]["kwargs"]
    assert (
        config.scheduler.items()
        >= {
            k: v
            for k, v in equivalents["scheduler"]["kwargs_uniform"].items()
            if k not in ("timestep_spacing", "steps_offset")
        }.items()
    )
    sampling = data["sampling"]
    assert (config.settings.num_frames, config.settings.height, config.settings.width) == (
        sampling["frames"],
        sampling["height"],
        sampling["width"],
    )
    assert config.settings.fps == sampling["fps"]
    assert config.settings.latent_scale_factor == sampling["scale_factor"]


def test_full_config_matches_the_released_model_sizes():
    """Parameter counts of the full-size networks (built on meta) equal the counts of the authors' modules."""
    config = named_config("full")
    modules = build_components(config, device="meta")
    count = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}
    assert count["unet"] == 1_438_854_980
    assert count["image_proj"] == 48_787_456
    assert count["vae"] == 83_656_168
    # OpenCLIP visual 632,076,800 minus its 1280x1024 output projection (unused, not part of CLIPVisionModel).
    assert count["image_encoder"] == 632_076_800 - 1280 * 1024
    assert (config.settings.num_frames, config.settings.height, config.settings.width) == (16, 512, 960)
    assert config.unet["context_split_index"] == 77 and config.image_proj["num_queries"] == 256
    assert model_settings("full")["num_frames"] == 16


def test_config_errors_are_actionable(tmp_path):
    with pytest.raises(ValueError, match="named configs"):
        named_config("huge")
    with pytest.raises(FileNotFoundError, match="neither a named config"):
        load_model_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  params:\n    pretrained_checkpoint:./x.ckpt\n  x: [\n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_model_config(bad)
    data = load_config()
    data["official"]["lvdm_model_config"]["unet_config"]["params"]["use_causal_attention"] = True
    path = tmp_path / "causal.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NotImplementedError, match="use_causal_attention"):
        load_model_config(path)


def test_authors_yaml_is_accepted(tmp_path):
    """An authors'-style YAML (``model: {target, params}``) yields the same config as the built-in dict."""
    yaml = pytest.importorskip("yaml")
    from genfusion_ns.video.models.architectures import AUTHORS_FULL_LVDM_CONFIG

    path = tmp_path / "generation_infer.yaml"
    path.write_text(yaml.safe_dump({"model": AUTHORS_FULL_LVDM_CONFIG, "data": {"target": "x"}}))
    loaded, builtin = load_model_config(path), named_config("full")
    assert (loaded.unet, loaded.image_proj, loaded.image_encoder, loaded.vae, loaded.settings) == (
        builtin.unet,
        builtin.image_proj,
        builtin.image_encoder,
        builtin.vae,
        builtin.settings,
    )


# ------------------------------------------------------------------------------------------ diffusers behaviour


@torch.no_grad()
def test_tiny_unet_save_load_round_trip_is_exact(tmp_path):
    unet = build_components("tiny", seed=0)["unet"]
    unet.save_pretrained(tmp_path / "unet")
    reloaded = GenFusionUNet.from_pretrained(tmp_path / "unet").eval()

    assert reloaded.config.context_split_index == 77 and reloaded.config.fps_conditioning
    processors = [
        p for p in reloaded.attn_processors.values() if isinstance(p, SplitContextCrossAttnProcessor)
    ]
    assert processors and len(processors) == sum("to_k_ip" in k for k in reloaded.state_dict())
    original, loaded = unet.state_dict(), reloaded.state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)

    generator = torch.Generator().manual_seed(0)
    cfg = unet.config
    sample = torch.randn(1, cfg.in_channels, 4, 8, 12, generator=generator)
    context = torch.randn(1, 256, cfg.cross_attention_dim, generator=generator)
    expected = unet(sample, 500, context, fps=30).sample
    assert expected.shape == (1, cfg.out_channels, 4, 8, 12)
    assert torch.equal(reloaded(sample, 500, context, fps=30).sample, expected)


@torch.no_grad()
def test_image_tokens_after_the_split_use_the_ip_projections():
    """Zeroing to_k_ip/to_v_ip must change the output only through tokens [77, L)."""
    unet = build_components("tiny", seed=1)["unet"]
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 8, 4, 8, 12, generator=generator)
    short_context = torch.randn(1, 77, 64, generator=generator)
    long_context = torch.cat([short_context, torch.randn(1, 179, 64, generator=generator)], dim=1)
    reference_short = unet(sample, 10, short_context).sample
    reference_long = unet(sample, 10, long_context).sample
    for name, param in unet.named_parameters():
        if "_ip." in name:
            param.zero_()
    assert torch.allclose(unet(sample, 10, short_context).sample, reference_short, atol=1e-6)
    assert not torch.allclose(unet(sample, 10, long_context).sample, reference_long, atol=1e-4)


def test_resampler_is_a_saveable_diffusers_model(tmp_path):
    proj = build_components("tiny", seed=0)["image_proj"]
    proj.save_pretrained(tmp_path)
    reloaded = GenFusionResampler.from_pretrained(tmp_path)
    tokens = torch.randn(2, 257, proj.config.embed_dims)
    with torch.no_grad():
        assert torch.equal(proj(tokens), reloaded(tokens))
    assert proj(tokens).shape == (2, 256, proj.config.output_dims)


def test_unet_rejects_bad_inputs():
    unet = build_components("tiny", seed=0)["unet"]
    context = torch.randn(1, 256, 64)
    with pytest.raises(ValueError, match="channels"):
        unet(torch.randn(1, 4, 4, 8, 12), 1, context)
    with pytest.raises(ValueError, match=r"\[B, C, T, h, w\]"):
        unet(torch.randn(1, 8, 8, 12), 1, context)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        unet(torch.randn(1, 8, 4, 8, 12), 1, torch.randn(1, 256, 32))
    with pytest.raises(ValueError, match="fps"):
        unet(torch.randn(2, 8, 4, 8, 12), 1, torch.randn(2, 256, 64), fps=torch.tensor([30, 30, 30]))
