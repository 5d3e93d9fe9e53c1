"""Conversion of the authors' checkpoint layout: fixture end to end, key refusal, full-size key coverage."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import pytest
import torch
from video_fixtures import checkpoint_path, fixture_dir, load_cases, manifest_path, tolerance

from genfusion_ns.video.checkpoint import (
    CheckpointKeyError,
    check_component_keys,
    key_mappings,
    load_authors_checkpoint,
    split_checkpoint,
)
from genfusion_ns.video.convert import entrypoint, load_components, settings_from_schedule
from genfusion_ns.video.models import GenFusionUNet, build_components, load_model_config, named_config
from genfusion_ns.video.models.keymap import SCHEDULE_BUFFERS

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _fixture_config():
    return load_model_config(fixture_dir() / "config.json")


def _unet_case_a_error(unet: GenFusionUNet) -> float:
    t, _ = load_cases()
    with torch.no_grad():
        out = unet(t["unet.input_concat"], t["unet.timesteps"], t["unet.context"], fps=t["unet.fps"]).sample
    return float((out - t["unet.out_v"]).abs().max())


# ------------------------------------------------------------------------------------------ end to end


def test_cli_converts_saves_and_refuses_to_overwrite(tmp_path):
    from genfusion_ns.video.pipeline import GenFusionVideoPipeline

    out = tmp_path / "converted"
    config = str(fixture_dir() / "config.json")
    entrypoint([str(checkpoint_path()), "--out", str(out), "--config", config])

    index = json.loads((out / "model_index.json").read_text())
    assert {"unet", "image_proj", "image_encoder", "vae", "scheduler"} <= index.keys()
    assert index["num_frames"] == 4 and index["height"] == 64 and index["width"] == 96
    assert index["dynamic_rescale_base_scale"] == pytest.approx(0.7)
    assert list((out / "unet").glob("*.safetensors"))

    _, cases = load_cases()
    assert _unet_case_a_error(GenFusionUNet.from_pretrained(out / "unet")) < tolerance(
        cases, "a_unet", "out_v"
    )
    pipe = GenFusionVideoPipeline.from_pretrained(out)
    assert isinstance(pipe.unet, GenFusionUNet)
    assert pipe.scheduler.config.prediction_type == "v_prediction"

    with pytest.raises(SystemExit) as refused:  # an existing output is refused with a message, exit status 2
        entrypoint([str(checkpoint_path()), "--out", str(out), "--config", config])
    assert refused.value.code == 2
    entrypoint([str(checkpoint_path()), "--out", str(out), "--config", config, "--overwrite"])


def test_conversion_assigns_checkpoint_tensors_without_copies():
    """Weights come from the memory-mapped file (no second copy); only split fused projections are new."""
    state = load_authors_checkpoint(checkpoint_path())
    source_ptrs = {t.untyped_storage().data_ptr() for t in state.values()}
    components, _ = load_components(state, _fixture_config())
    assert not state  # consumed
    conv_in = components["unet"].conv_in.weight
    assert conv_in.untyped_storage().data_ptr() in source_ptrs
    assert components["vae"].encoder.conv_in.weight.untyped_storage().data_ptr() in source_ptrs


# ------------------------------------------------------------------------------------------ refusal


def test_missing_and_unexpected_keys_are_listed_in_authors_names():
    state = load_authors_checkpoint(checkpoint_path())
    del state["model.diffusion_model.out.2.bias"]
    del state["image_proj_model.layers.0.0.to_kv.weight"]
    del state["embedder.model.visual.transformer.resblocks.1.attn.in_proj_weight"]
    state["model.diffusion_model.junk.weight"] = torch.zeros(3)
    state["something_else"] = torch.zeros(1)
    with pytest.raises(CheckpointKeyError) as info:
        load_components(state, _fixture_config())
    message = str(info.value)
    for key in (
        "model.diffusion_model.out.2.bias",
        "image_proj_model.layers.0.0.to_kv.weight",
        "embedder.model.visual.transformer.resblocks.1.attn.in_proj_weight",
    ):
        assert key in info.value.missing and key in message
    assert set(info.value.unexpected) == {"model.diffusion_model.junk.weight", "something_else"}


def test_checkpoint_of_another_size_is_refused_with_shapes():
    with pytest.raises(CheckpointKeyError, match="--config") as info:
        load_components(checkpoint_path(), "tiny")
    assert info.value.mismatched or info.value.unexpected or info.value.missing


def test_checkpoint_without_unet_is_refused():
    state = {k: v for k, v in load_authors_checkpoint(checkpoint_path()).items()
             if not k.startswith("model.diffusion_model.")}  # fmt: skip
    with pytest.raises(CheckpointKeyError, match="every unet weight"):
        load_components(state, _fixture_config())


def test_wrapped_formats_and_framestride_name(tmp_path):
    """DeepSpeed-style ``module`` + ``_forward_module.`` prefix and the old ``framestride_embed`` name load too."""
    state = load_authors_checkpoint(checkpoint_path())
    renamed = {k.replace("fps_embedding", "framestride_embed"): v for k, v in state.items()}
    path = tmp_path / "deepspeed.ckpt"
    torch.save({"module": {f"_forward_module.{k}": v for k, v in renamed.items()}}, path)
    components, _ = load_components(path, _fixture_config())
    _, cases = load_cases()
    assert _unet_case_a_error(components["unet"]) < tolerance(cases, "a_unet", "out_v")
    with pytest.raises(ValueError, match="not a GenFusion checkpoint"):
        torch.save({"epoch": 3}, tmp_path / "other.ckpt")
        load_authors_checkpoint(tmp_path / "other.ckpt")


def test_stock_vae_comes_from_a_local_folder_when_absent(tmp_path):
    """Without first_stage_model.* the VAE is loaded from --vae-source; a missing source is an actionable error."""
    full = load_authors_checkpoint(checkpoint_path())
    config = _fixture_config()
    reference, _ = load_components(dict(full), config)
    reference["vae"].save_pretrained(tmp_path / "vae")

    without_vae = {k: v for k, v in full.items() if not k.startswith("first_stage_model.")}
    components, _ = load_components(dict(without_vae), config, vae_source=str(tmp_path / "vae"))
    frames = load_cases()[0]["vae.frames"]
    with torch.no_grad():
        expected = reference["vae"].encode(frames).latent_dist.mean
        assert torch.equal(components["vae"].encode(frames).latent_dist.mean, expected)

    with pytest.raises(OSError, match="huggingface-cli download"):
        load_components(dict(without_vae), config, vae_source=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------------ schedule


def test_schedule_buffers_are_checked_and_dynamic_rescale_is_read():
    from genfusion_ns.video.scheduling import dynamic_rescale_table

    state = load_authors_checkpoint(checkpoint_path())
    schedule = {k: state[k] for k in SCHEDULE_BUFFERS}
    config = _fixture_config()
    assert settings_from_schedule(schedule, config).settings == config.settings

    altered = dict(schedule, scale_arr=dynamic_rescale_table(0.8, 300, 1000))
    with pytest.warns(UserWarning, match="overrides"):
        settings = settings_from_schedule(altered, config).settings
    assert (settings.dynamic_rescale_base_scale, settings.dynamic_rescale_turning_step) == (0.8, 300)

    with pytest.raises(ValueError, match="alphas_cumprod"):
        settings_from_schedule(dict(schedule, alphas_cumprod=schedule["alphas_cumprod"] * 0.9), config)
    with pytest.raises(ValueError, match="scale_arr"):
        settings_from_schedule(dict(schedule, scale_arr=torch.rand(1400)), config)


# ------------------------------------------------------------------------------------------ full size


def test_full_size_manifest_is_covered_exactly():
    """Every key of the released checkpoint maps onto the full-size modules with the right shape, and what is
    dropped is exactly the unused set (text tower, CLIP text leftovers, CLIP projection) plus schedule buffers."""
    manifest = json.loads(manifest_path().read_text())
    state = {k: torch.empty(v["shape"], device="meta") for k, v in manifest["keys"].items()}
    config = named_config("full")
    modules = build_components(config, device="meta")
    clip_prefix = next(
        k for k in modules["image_encoder"].state_dict() if k.endswith("embeddings.class_embedding")
    )
    mappings = key_mappings(config, clip_prefix.removesuffix("embeddings.class_embedding"))

    split = split_checkpoint(state, mappings)
    expected = {name: {k: v.shape for k, v in m.state_dict().items()} for name, m in modules.items()}
    check_component_keys(split, expected, mappings)  # raises on any missing/unexpected/mismatched key

    assert set(split.components) == set(expected)
    for name, shapes in expected.items():
        assert split.components[name].keys() == shapes.keys()
    assert set(split.schedule) == SCHEDULE_BUFFERS
    unused = {
        k for k in manifest["keys"]
        if k.startswith("cond_stage_model.")
        or (k.startswith("embedder.") and not k.startswith("embedder.model.visual."))
        or k == "embedder.model.visual.proj"
    }  # fmt: skip
    assert set(split.dropped) == unused
    used_values = sum(t.numel() for sd in split.components.values() for t in sd.values())
    module_values = sum(sum(v.numel() for v in m.state_dict().values()) for m in modules.values())
    assert used_values == module_values
    # every kind of key the real checkpoint has is also in the fixture checkpoint (so the numerics cover it)
    patterns = {re.sub(r"\d+", "#", k) for k in manifest["keys"]}
    fixture_patterns = {re.sub(r"\d+", "#", k) for k in load_authors_checkpoint(checkpoint_path())}
    assert patterns == fixture_patterns


def test_coverage_check_detects_a_wrong_block_count():
    """The coverage check can fail: a UNet config with fewer resnets per level leaves checkpoint keys unmapped."""
    manifest = json.loads(manifest_path().read_text())
    state = {k: torch.empty(v["shape"], device="meta") for k, v in manifest["keys"].items()}
    config = named_config("full")
    smaller = dataclasses.replace(config, unet=dict(config.unet, layers_per_block=1))
    split = split_checkpoint(state, key_mappings(smaller))
    assert split.unrecognised and any("input_blocks" in k for k in split.unrecognised)


def test_key_tables_are_bijective_for_other_model_shapes():
    """For a differently shaped model (level 0 without attention, 1 resnet per level, fewer than 77 context tokens,
    3 frames) every module weight has exactly one authors' source, and converting that name gives the weight back."""
    from genfusion_ns.video.models.architectures import TINY_LVDM_CONFIG, TINY_OPENCLIP_ARCHITECTURE
    from genfusion_ns.video.models.configs import config_from_lvdm

    lvdm = copy.deepcopy(TINY_LVDM_CONFIG)
    unet = lvdm["params"]["unet_config"]["params"]
    unet.update(attention_resolutions=[2, 4], channel_mult=[1, 2, 2], num_res_blocks=1, temporal_length=3)
    lvdm["params"]["image_proj_stage_config"]["params"].update(num_queries=4, video_length=8, depth=3)
    config = config_from_lvdm(lvdm, openclip_architecture=TINY_OPENCLIP_ARCHITECTURE)
    assert config.unet["down_block_types"] == ["DownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D"]

    modules = build_components(config, device="meta")
    clip_prefix = next(
        k for k in modules["image_encoder"].state_dict() if k.endswith("embeddings.class_embedding")
    )
    mappings = key_mappings(config, clip_prefix.removesuffix("embeddings.class_embedding"))
    for name, module in modules.items():
        shapes = {k: v.shape for k, v in module.state_dict().items()}
        sources = {mappings[name].authors_name(k) for k in shapes}
        assert not any(s.startswith("(no authors") for s in sources), name
        rebuilt = {}
        for source in sources:
            rebuilt.update(
                mappings[name].convert(source, torch.empty(6, 1, device="meta"))
            )  # splits in 2 or 3
        assert rebuilt.keys() == shapes.keys(), name
