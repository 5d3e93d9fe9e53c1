"""Video-model data generation and training on CPU: clips from a tiny masked reconstruction, sharding/resume,
the v-prediction objective, an overfit check, and a trained pipeline that the fusion loader accepts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_train.clips import FRAMES_FILE, read_scene_record, read_window
from diffusion_train.make_data import MakeDataConfig, MakeDataError, make_data, parse_shard, select_shard

FRAMES, HEIGHT, WIDTH = 8, 32, 32


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
    """One 8-view 32x32 scene turned into clips (masked reconstruction: 25 steps of genfusion-2dgs-lite)."""
    from genfusion_ns.scenes import generate_scene

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip_data")
    generate_scene(root / "scenes" / "room", seed=21, views=FRAMES, train_views=3, resolution=HEIGHT)
    config = MakeDataConfig(scenes=(str(root / "scenes" / "*"),), output=root / "data", max_steps=25, clip_length=4,
                            device="cpu", seed=1)
    built = make_data(config)
    assert built == ["room"]
    return config, root / "data" / "scenes" / "room", root / "scenes" / "room"


def test_clips_have_the_right_shapes_ranges_and_units(clip_data):
    config, scene_dir, source = clip_data
    record = read_scene_record(scene_dir)
    assert (record.num_frames, record.height, record.width) == (FRAMES, HEIGHT, WIDTH)
    assert [(c.start, c.length) for c in record.clips] == [(0, 4), (4, 4)]
    assert record.target_depth_source == "dataset depth files"
    frames = read_window(scene_dir, 0, FRAMES)
    assert frames["artifact_rgb"].shape == frames["target_rgb"].shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert frames["artifact_rgb"].dtype == frames["target_rgb"].dtype == np.uint8
    assert frames["artifact_depth"].dtype == frames["target_depth"].dtype == np.float16

    # Target = the captured images, in capture order.
    for i in (0, FRAMES - 1):
        original = np.asarray(Image.open(source / "images" / f"frame_{i:05d}.png"))
        assert np.array_equal(frames["target_rgb"][i], original)

    # The reconstruction saw one corner patch: renders have holes (depth 0) but cover part of every video.
    artifact_depth = frames["artifact_depth"].astype(np.float32)
    rendered = artifact_depth > 0
    assert 0.05 < rendered.mean() < 0.999
    assert (frames["target_depth"] > 0).all()
    # Rendered depth is back in the dataset's units (metres here), comparable with the dataset depth.
    target_depth = frames["target_depth"].astype(np.float32)
    relative = np.abs(artifact_depth[rendered] - target_depth[rendered]) / target_depth[rendered]
    assert np.median(relative) < 0.25

    manifest = json.loads((config.output / "manifest.json").read_text())
    assert manifest["num_scenes"] == 1 and manifest["num_clips"] == 2
    assert manifest["scenes"][0]["settings"]["patch"]["width"] == WIDTH // 2
    assert not (scene_dir / "run").exists()  # reconstruction removed unless --keep-reconstruction


def test_make_data_resumes_and_shards(clip_data, tmp_path):
    config, scene_dir, _ = clip_data
    stamp = os.stat(scene_dir / FRAMES_FILE).st_mtime_ns
    assert make_data(config) == []  # finished scene skipped
    assert os.stat(scene_dir / FRAMES_FILE).st_mtime_ns == stamp  # and not rewritten

    folders = [Path(f"/data/s{i}") for i in range(5)]
    assert select_shard(folders, "1/2") == [Path("/data/s1"), Path("/data/s3")]
    assert sorted(select_shard(folders, "0/2") + select_shard(folders, "1/2")) == folders
    for bad in ("2/2", "a/b", "1"):
        with pytest.raises(MakeDataError, match="shard"):
            parse_shard(bad)

    # A foreign folder where a scene's output would go is never overwritten.
    other = MakeDataConfig(scenes=config.scenes, output=tmp_path / "data", max_steps=1, device="cpu")
    foreign = tmp_path / "data" / "scenes" / "room"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MakeDataError, match="not a finished scene"):
        make_data(other)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(MakeDataError, match="transforms.json"):
        make_data(MakeDataConfig(scenes=(str(tmp_path),), output=tmp_path / "x"))


def test_clip_dataset_items_follow_the_pipeline_conventions(clip_data):
    from diffusion_train.dataset import ClipDataset

    config, _, _ = clip_data
    dataset = ClipDataset([config.output], num_frames=4, height=64, width=96)
    assert len(dataset) == FRAMES - 4 + 1
    item = dataset[2]
    assert item["artifact_rgb"].shape == item["target_rgb"].shape == (3, 4, 64, 96)
    assert item["artifact_depth"].shape == item["target_depth"].shape == (1, 4, 64, 96)
    assert item["reference"].shape == (3, 64, 96)
    assert int(item["index"]) == 2  # the window's position, for the posterior cache
    for key, value in item.items():
        if key != "index":
            assert value.min() >= -1.0 and value.max() <= 1.0, key
    assert (item["artifact_depth"] == -1).any()  # holes are "far"
    assert item["target_depth"].max() > 0.5  # near target pixels


@pytest.fixture(scope="module")
def tiny_pipe():
    from genfusion_ns.video import GenFusionVideoPipeline

    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_objective_uses_zero_terminal_snr_v_targets_and_dynamic_rescale(tiny_pipe):
    from diffusion_train.objective import VPredictionObjective

    objective = VPredictionObjective(tiny_pipe)
    x0, noise = torch.randn(2, 4, 4, 8, 12), torch.randn(2, 4, 4, 8, 12)
    noisy, velocity = objective.noisy_and_target(x0, noise, torch.tensor([999, 0]))
    assert torch.allclose(noisy[0], noise[0], atol=1e-6)  # zero SNR at the last timestep
    assert torch.allclose(velocity[0], -0.7 * x0[0], atol=1e-5)  # v = -s(999) x0, s = base scale 0.7
    alpha = float(objective.scheduler.alphas_cumprod[0])
    expected = alpha**0.5 * noise[1] - (1 - alpha) ** 0.5 * x0[1]  # s(0) = 1
    assert torch.allclose(velocity[1], expected, atol=1e-5)


def test_reference_dropout_is_the_pipelines_unconditional_branch(tiny_pipe, clip_data):
    from diffusion_train.dataset import ClipDataset
    from diffusion_train.objective import encode_batch

    config, _, _ = clip_data
    dataset = ClipDataset([config.output], num_frames=4, height=64, width=96)
    batch = {k: v[None] for k, v in dataset[0].items()}
    dropped = encode_batch(tiny_pipe, batch, reference_dropout=1.0)
    kept = encode_batch(tiny_pipe, batch, reference_dropout=0.0)
    assert bool(dropped.dropped.all()) and not bool(kept.dropped.any())
    assert dropped.target.shape == dropped.condition.shape == (1, 4, 4, 8, 12)
    with torch.no_grad():
        conditional, unconditional = tiny_pipe.encode_reference(batch["reference"][0])
        assert torch.allclose(tiny_pipe.image_proj(dropped.clip_tokens), unconditional, atol=1e-5)
        assert torch.allclose(tiny_pipe.image_proj(kept.clip_tokens), conditional, atol=1e-5)


def test_training_steps_overfit_a_fixed_batch(tiny_pipe, clip_data):
    from diffusion_train.dataset import ClipDataset
    from diffusion_train.objective import VideoDenoiser, VPredictionObjective, encode_batch

    torch.manual_seed(0)
    config, _, _ = clip_data
    dataset = ClipDataset([config.output], num_frames=4, height=64, width=96)
    encoded = encode_batch(tiny_pipe, {k: v[None] for k, v in dataset[1].items()}, reference_dropout=0.0)
    denoiser = VideoDenoiser(tiny_pipe.unet, tiny_pipe.image_proj, fps=30).train()
    objective = VPredictionObjective(tiny_pipe)
    noise, timesteps = torch.randn_like(encoded.target), torch.tensor([300])
    optimizer = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        loss = objective.loss(denoiser, encoded, noise, timesteps)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_train_cli_saves_a_loadable_pipeline_and_resumes(clip_data, tmp_path):
    from diffusion_train.train import TrainVideoConfig, TrainVideoError, train
    from genfusion_ns.fusion.video_model import load_video_pipeline
    from genfusion_ns.video import GenFusionVideoPipeline

    config, _, _ = clip_data
    out = tmp_path / "run"
    options = {"data": (config.output,), "output": out, "init": "random:tiny", "max_steps": 2,
               "gradient_accumulation_steps": 1, "learning_rate": 1e-3, "checkpoint_every": 1, "sample_every": 0,
               "sample_steps": 2, "window_stride": 2}
    folder = train(TrainVideoConfig(**options))
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and (out / "samples" / "step-0000002.png").is_file()
    assert any((out / "logs").rglob("events.out.tfevents*"))

    trained = GenFusionVideoPipeline.from_pretrained(str(folder))
    initial = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    changed = [not torch.equal(a, b) for a, b in zip(trained.unet.state_dict().values(),
                                                     initial.unet.state_dict().values())]
    assert any(changed)
    assert torch.equal(trained.vae.state_dict()["encoder.conv_in.weight"],
                       initial.vae.state_dict()["encoder.conv_in.weight"])  # the VAE is frozen
    loaded = load_video_pipeline(str(folder), "cpu")
    assert loaded.config.num_frames == 4

    with pytest.raises(TrainVideoError, match="not empty"):
        train(TrainVideoConfig(**options))
    train(TrainVideoConfig(**{**options, "max_steps": 3}, resume=True))
    assert (out / "checkpoints" / "checkpoint-3").is_dir()


def test_block_checkpointing_keeps_gradients():
    from diffusion_train.memory import enable_block_checkpointing
    from diffusion_train.objective import EncodedBatch, VideoDenoiser, VPredictionObjective
    from genfusion_ns.video import GenFusionVideoPipeline

    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=5)
    denoiser = VideoDenoiser(pipe.unet, pipe.image_proj, fps=30).train()
    objective = VPredictionObjective(pipe)
    generator = torch.Generator().manual_seed(0)
    latents = [torch.randn(1, 4, 4, 8, 12, generator=generator) for _ in range(3)]
    encoded = EncodedBatch(latents[0], latents[1], torch.randn(1, 257, 64, generator=generator), torch.tensor([False]))

    def gradients():
        torch.manual_seed(1)  # same dropout masks in both runs (the temporal convs use dropout)
        denoiser.zero_grad()
        objective.loss(denoiser, encoded, latents[2], torch.tensor([420])).backward()
        return [p.grad.clone() for p in denoiser.parameters() if p.grad is not None]

    plain = gradients()
    assert enable_block_checkpointing(pipe.unet) == 5
    checkpointed = gradients()
    assert len(plain) == len(checkpointed)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, checkpointed))


def test_vae_stage_trains_the_autoencoder_and_sets_the_latent_scale(clip_data, tmp_path):
    from diffusion_train.train_vae import TrainVaeConfig, random_crops, train_vae
    from genfusion_ns.video import GenFusionVideoPipeline

    frames = torch.randn(6, 4, 32, 32)
    crops = random_crops(frames, 4, 16, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 4, 16, 16)
    assert any(torch.equal(crops[0], frames[i, :, y:y + 16, x:x + 16])
               for i in range(6) for y in range(17) for x in range(17))

    config, _, _ = clip_data
    out = tmp_path / "vae"
    folder = train_vae(TrainVaeConfig(data=(config.output,), output=out, init="random:tiny", max_steps=12,
                                      batch_size=1, frames_per_step=4, crop_size=32, learning_rate=2e-3,
                                      log_every=1, scale_batches=2))
    log = json.loads((out / "train_vae_log.json").read_text())
    l1 = [row["l1"] for row in log["history"]]
    assert len(l1) == 12 and np.mean(l1[-3:]) < np.mean(l1[:3]), l1
    trained = GenFusionVideoPipeline.from_pretrained(str(folder))
    initial = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    assert not torch.equal(trained.vae.state_dict()["encoder.conv_in.weight"],
                           initial.vae.state_dict()["encoder.conv_in.weight"])
    assert torch.equal(trained.unet.state_dict()["conv_in.weight"], initial.unet.state_dict()["conv_in.weight"])
    assert trained.config.latent_scale_factor == pytest.approx(1.0 / log["latent_std"])


def test_decoder_fine_tune_keeps_the_encoder_and_the_latent_space(clip_data, tmp_path):
    from diffusion_train.train import TrainVideoError
    from diffusion_train.train_vae import TrainVaeConfig, train_vae
    from genfusion_ns.video import GenFusionVideoPipeline

    config, _, _ = clip_data
    start = GenFusionVideoPipeline.from_config_name("tiny", seed=3)
    start.register_to_config(latent_scale_factor=0.25)
    start.save_pretrained(str(tmp_path / "start"))
    out = tmp_path / "decoder"
    folder = train_vae(TrainVaeConfig(data=(config.output,), output=out, init=str(tmp_path / "start"),
                                      parts="decoder", max_steps=12, batch_size=1, frames_per_step=4, crop_size=32,
                                      learning_rate=2e-3, log_every=1, scale_batches=2, save_dtype="float16"))
    log = json.loads((out / "train_vae_log.json").read_text())
    l1 = [row["l1"] for row in log["history"]]
    assert np.mean(l1[-3:]) < np.mean(l1[:3]), l1
    trained = GenFusionVideoPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    before, after = start.vae.state_dict(), trained.vae.state_dict()
    half = lambda name: before[name].to(torch.float16).float()
    assert all(torch.equal(after[name], half(name)) for name in before
               if name.startswith(("encoder.", "quant_conv.")))
    assert not torch.equal(after["decoder.conv_out.weight"], half("decoder.conv_out.weight"))
    assert trained.config.latent_scale_factor == 0.25 == log["latent_scale_factor"]
    assert next(trained.vae.parameters()).dtype == torch.float32
    assert (folder / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size < \
        (tmp_path / "start" / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size * 0.6
    with pytest.raises(TrainVideoError, match="--parts decoder fine-tunes a trained VAE"):
        train_vae(TrainVaeConfig(data=(config.output,), output=tmp_path / "random", init="random:tiny",
                                 parts="decoder", max_steps=1))


def test_moving_patches_give_each_frame_its_own_patch(clip_data, tmp_path, monkeypatch):
    import genfusion_ns.protocols as protocols

    made = []

    def recording(config):
        made.append(protocols_make(config))
        return made[-1]

    protocols_make = protocols.make_masked_dataset
    monkeypatch.setattr(protocols, "make_masked_dataset", recording)
    _, _, source = clip_data
    for placement in ("corner", "moving"):
        config = MakeDataConfig(scenes=(str(source),), output=tmp_path / placement, max_steps=1, clip_length=4,
                                device="cpu", seed=1, patch_placement=placement)
        assert make_data(config) == ["room"]
        record = read_scene_record(tmp_path / placement / "scenes" / "room")
        assert record.settings["patch"]["placement"] == placement
    corner, moving = ({(p.x, p.y) for p in result.patches} for result in made)
    assert len(corner) == 1 and len(moving) > 1  # one corner for the scene; a patch path through the frames
    assert {(p.width, p.height) for p in made[1].patches} == {(WIDTH // 2, HEIGHT // 2)}


def test_sparse_artifacts_render_every_frame_of_a_sparse_capture(tmp_path):
    from genfusion_ns.scenes import generate_scene

    torch.set_num_threads(1)
    generate_scene(tmp_path / "scenes" / "sparse", seed=22, views=6, train_views=3, resolution=24)
    config = MakeDataConfig(scenes=(str(tmp_path / "scenes" / "sparse"),), output=tmp_path / "data",
                            artifacts="sparse", max_steps=10, clip_length=3, device="cpu")
    assert make_data(config) == ["sparse"]
    record = read_scene_record(tmp_path / "data" / "scenes" / "sparse")
    assert record.num_frames == 6  # the 3 training views and the 3 held-out ones
    assert record.settings["artifacts"] == "sparse" and record.settings["patch"] is None
    frames = read_window(tmp_path / "data" / "scenes" / "sparse", 0, 6)
    names = record.settings["image_filenames"]
    assert names == sorted(names)
    for i, name in enumerate(names):
        original = np.asarray(Image.open(tmp_path / "scenes" / "sparse" / "images" / name))
        assert np.array_equal(frames["target_rgb"][i], original)


def test_small_config_is_the_shipped_architecture():
    from genfusion_ns.video.models import build_components, load_model_config

    config = load_model_config("small")
    assert (config.settings.num_frames, config.settings.height, config.settings.width) == (8, 96, 96)
    components = build_components(config, seed=0, device="meta")
    parameters = sum(p.numel() for m in components.values() for p in m.parameters())
    assert parameters * 2 <= 30 * 2**20  # fits the 30 MB budget when stored in float16


def test_posterior_cache_encodes_each_window_once(tiny_pipe, clip_data):
    from diffusion_train.dataset import ClipDataset
    from diffusion_train.objective import PosteriorCache, encode_batch

    config, _, _ = clip_data
    dataset = ClipDataset([config.output], num_frames=4, height=64, width=96)
    batch = {k: v[None] for k, v in dataset[3].items()}
    assert int(batch["index"][0]) == 3
    cache = PosteriorCache()
    calls = []
    original = tiny_pipe.encode_posterior
    tiny_pipe.encode_posterior = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        first = encode_batch(tiny_pipe, batch, 0.0, torch.Generator().manual_seed(0), cache=cache)
        second = encode_batch(tiny_pipe, batch, 0.0, torch.Generator().manual_seed(0), cache=cache)
    finally:
        del tiny_pipe.encode_posterior
    assert len(calls) == 2 and len(cache) == 2  # target and artifact, once each
    uncached = encode_batch(tiny_pipe, batch, 0.0, torch.Generator().manual_seed(0))
    assert torch.allclose(first.target, second.target) and torch.allclose(first.target, uncached.target, atol=1e-5)
    assert torch.allclose(first.condition, uncached.condition, atol=1e-5)
