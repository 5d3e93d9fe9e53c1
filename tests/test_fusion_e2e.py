"""End-to-end cyclic fusion on CPU with the seeded tiny random video model: rounds happen, repaired views are
injected and persisted, a resume restores them, and evaluation scores only the real held-out views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def small_fusion_config(scene: Path, out: Path, steps: int, fusion_start: int = 10, fusion_every: int = 10):
    """``genfusion-lite`` set up like the bench/demo runs, with two short rounds of the random tiny model."""
    from genfusion_ns.runner import trainer_config

    config = trainer_config("genfusion-lite", scene, out, "fusion", "run", device="cpu", max_steps=steps,
                            video_model="random-tiny")
    pipeline = config.pipeline
    pipeline.fusion_start, pipeline.fusion_every, pipeline.fusion_until = fusion_start, fusion_every, steps
    pipeline.trajectory_frames = 6
    pipeline.num_inference_steps = 2
    return config


def run_training(config) -> Path:
    from genfusion_ns.runner import train_in_process

    return train_in_process(config).parent


@pytest.mark.slow
def test_fusion_rounds_inject_persist_resume_and_eval(tiny_scene, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    config = small_fusion_config(tiny_scene, tmp_path / "out", steps=30)
    base = run_training(config)

    rounds = sorted((base / "genfusion_repaired").iterdir())
    assert [r.name for r in rounds] == ["round_00_step_000010", "round_01_step_000020"]
    manifest = json.loads((rounds[-1] / "manifest.json").read_text())
    assert len(manifest["frames"]) == 6
    for frame in manifest["frames"]:
        assert (rounds[-1] / frame["image"]).exists() and (rounds[-1] / frame["depth"]).exists()

    # ns-eval path: the checkpoint restores the last round's views into the training set, not into evaluation.
    _, pipeline, _, step = eval_setup(base / "config.yml", test_mode="test")
    assert len(pipeline.datamanager.train_dataset) == 3 + 6  # replace mode: only the last round is kept
    assert pipeline.datamanager.num_real_views == 3
    assert len(pipeline.datamanager.eval_dataset) == 9
    metrics = pipeline.get_average_eval_image_metrics()
    assert 0 < metrics["psnr"] < 60

    # Resume: the new run starts with the restored views and keeps training.
    resume = small_fusion_config(tiny_scene, tmp_path / "resumed", steps=35)
    resume.load_dir = base / "nerfstudio_models"
    resumed_base = run_training(resume)
    _, resumed, _, _ = eval_setup(resumed_base / "config.yml", test_mode="test")
    assert len(resumed.datamanager.train_dataset) == 3 + 6


@pytest.mark.slow
def test_video_model_none_equals_the_baseline(tiny_scene, tmp_path):
    """``--pipeline.video-model none`` must train exactly like ``genfusion-2dgs-lite`` (same seed, same steps)."""
    from genfusion_ns.runner import trainer_config

    fusion = small_fusion_config(tiny_scene, tmp_path / "fusion", steps=12)
    fusion.pipeline.video_model = "none"
    baseline = trainer_config("genfusion-2dgs-lite", tiny_scene, tmp_path / "baseline", "fusion", "run",
                              device="cpu", max_steps=12)

    def final_params(config):
        base = run_training(config)
        checkpoint = next((base / "nerfstudio_models").glob("*.ckpt"))
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["pipeline"]
        return {k: v for k, v in state.items() if k.startswith("_model.gauss_params.")}

    ours, reference = final_params(fusion), final_params(baseline)
    assert ours.keys() == reference.keys() and ours
    for key in ours:
        assert torch.equal(ours[key], reference[key]), key
