"""Training faults and bad training options: each is caught before step 0 with a message, or recovered from.

Checkpoints (``--load-dir`` on folders without a usable checkpoint, a truncated or foreign checkpoint, loading with
``weights_only`` alone), the fusion options that used to fail only at the first round (video model, camera path,
a schedule with no round), damaged repair rounds, Ctrl+C during a round, and resume against an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genfusion_ns.errors import UserExit

pytestmark = pytest.mark.slow

STEPS = 24  # rounds at 6, 12, 18 (1/4 of the run)


def fusion_config(scene: Path, out: Path, steps: int = STEPS, video_model: str = "random-tiny", **pipeline):
    from genfusion_ns.runner import trainer_config

    config = trainer_config("genfusion-lite", scene, out, "run", "t", device="cpu", max_steps=steps,
                            video_model=video_model)
    config.pipeline.trajectory_frames = 4
    config.pipeline.num_inference_steps = 2
    config.pipeline.model.supersample = 1
    for key, value in pipeline.items():
        setattr(config.pipeline, key, value)
    return config


def baseline_config(scene: Path, out: Path, steps: int = 6, method: str = "genfusion-2dgs-lite"):
    from genfusion_ns.runner import trainer_config

    config = trainer_config(method, scene, out, "run", "t", device="cpu", max_steps=steps)
    config.pipeline.model.supersample = 1
    return config


def set_up(config):
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def train(config):
    trainer = set_up(config)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def baseline_run(tiny_scene, tmp_path_factory):
    """A short baseline run that keeps every checkpoint (steps 2, 4, 5)."""
    config = baseline_config(tiny_scene, tmp_path_factory.mktemp("baseline"))
    config.steps_per_save = 2
    config.save_only_latest_checkpoint = False
    train(config)
    return config


# ---------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_load_with_weights_only_without_our_package(baseline_run):
    checkpoint = sorted(baseline_run.get_checkpoint_dir().glob("*.ckpt"))[-1]
    code = ("import sys, torch; state = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
            "assert not [m for m in sys.modules if m.startswith('genfusion')]; print(sorted(state))")
    result = subprocess.run([sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipeline" in result.stdout and "optimizers" in result.stdout


def test_load_dir_without_checkpoints_is_a_message(baseline_run, tmp_path, capsys):
    for folder in (tmp_path / "empty", tmp_path / "stray"):
        folder.mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "stray" / "step-abc.ckpt").write_text("")
    for folder in (tmp_path / "empty", tmp_path / "stray", tmp_path / "missing"):
        config = baseline_config(baseline_run.pipeline.datamanager.data, tmp_path / "runs")
        config.load_dir = folder
        with pytest.raises(UserExit):
            set_up(config)
        message = "".join(capsys.readouterr())
        assert "--load-dir" in message and str(folder.name) in message, message


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(baseline_run, tmp_path, capsys):
    folder = tmp_path / "models"
    shutil.copytree(baseline_run.get_checkpoint_dir(), folder)
    files = sorted(folder.glob("*.ckpt"))
    assert len(files) >= 2
    latest = files[-1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 3])
    config = baseline_config(baseline_run.pipeline.datamanager.data, tmp_path / "runs", steps=8)
    config.load_dir = folder
    trainer = set_up(config)
    assert "unreadable" in capsys.readouterr().out
    assert trainer._start_step == int(files[-2].stem.split("-")[1]) + 1


def test_another_methods_checkpoint_is_a_message(baseline_run, tmp_path, capsys):
    # genfusion-2dgs has SH degree 3, the lite recipe 0: features_rest differs in size
    config = baseline_config(baseline_run.pipeline.datamanager.data, tmp_path / "runs", method="genfusion-2dgs")
    config.load_dir = baseline_run.get_checkpoint_dir()
    with pytest.raises(UserExit):
        set_up(config)
    message = "".join(capsys.readouterr())
    assert "does not fit the model" in message and "genfusion-2dgs" in message


# ---------------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize("case", ["typo", "not-a-model", "incomplete", "uncached-hub-id", "a-file"])
def test_an_unusable_video_model_fails_at_start_up(case, tiny_scene, tmp_path):
    from genfusion_ns.fusion.video_model import VideoModelUnavailable, load_video_pipeline

    spec = {"typo": "defualt", "not-a-model": str(tmp_path), "uncached-hub-id": "nobody/no-such-model-xyz",
            "a-file": str(tiny_scene / "transforms.json")}.get(case)
    if case == "incomplete":
        load_video_pipeline("random-tiny", "cpu").save_pretrained(tmp_path / "model")
        shutil.rmtree(tmp_path / "model" / "unet")
        spec = str(tmp_path / "model")
    config = fusion_config(tiny_scene, tmp_path / "runs", video_model=spec).pipeline
    with pytest.raises(VideoModelUnavailable, match="--pipeline.video-model"):
        config.setup(device="cpu", test_mode="val")


@pytest.mark.parametrize("content", [None, "{not json", '{"camera_path": []}', '{"camera_path": [{"x": 1}]}',
                                     '{"camera_path": [{"camera_to_world": [1, 2, 3]}]}'])
def test_a_bad_camera_path_fails_at_start_up(content, tiny_scene, tmp_path):
    from genfusion_ns.fusion.pipeline import FusionSettingsError

    path = tmp_path / "path.json"
    if content is not None:
        path.write_text(content)
    config = fusion_config(tiny_scene, tmp_path / "runs", trajectory="path", camera_path=path).pipeline
    with pytest.raises(FusionSettingsError, match="camera"):
        config.setup(device="cpu", test_mode="val")


@pytest.mark.parametrize("field", ["lambda_reg", "crop_lambda_reg"])
def test_a_negative_repaired_view_weight_fails_at_start_up(field, tiny_scene, tmp_path):
    from genfusion_ns.fusion.pipeline import FusionSettingsError

    config = fusion_config(tiny_scene, tmp_path / "runs", **{field: -0.5}).pipeline
    with pytest.raises(FusionSettingsError, match=field.replace("_", "-")):
        config.setup(device="cpu", test_mode="val")


def test_a_schedule_without_rounds_says_so(tiny_scene, tmp_path, capsys):
    config = fusion_config(tiny_scene, tmp_path / "runs", steps=4, fusion_start=10)
    set_up(config)
    assert "no repair round fits in 4 steps" in capsys.readouterr().out


def test_rounds_move_with_max_num_iterations(tiny_scene, tmp_path):
    for steps, expected in ((24, [6, 12, 18]), (40, [10, 20, 30])):
        trainer = set_up(fusion_config(tiny_scene, tmp_path / f"runs{steps}", steps=steps))
        assert sorted(trainer.pipeline._round_steps) == expected
    absolute = set_up(fusion_config(tiny_scene, tmp_path / "abs", steps=40, fusion_start=5, fusion_every=15))
    assert sorted(absolute.pipeline._round_steps) == [5, 20, 35]


# ---------------------------------------------------------------------------------------------------- rounds
@pytest.fixture(scope="module")
def fusion_run(tiny_scene, tmp_path_factory):
    """An uninterrupted fusion run keeping every checkpoint (saved every 5 steps)."""
    config = fusion_config(tiny_scene, tmp_path_factory.mktemp("fusion"))
    config.steps_per_save = 5
    config.save_only_latest_checkpoint = False
    trainer = train(config)
    return config, trainer


def _round_folders(config) -> list[Path]:
    return sorted((config.get_base_dir() / "genfusion_repaired").iterdir())


@pytest.mark.parametrize("damage", ["truncated-manifest", "missing-frame"])
def test_a_damaged_round_is_skipped_by_ns_eval(damage, fusion_run, tmp_path, capsys):
    from nerfstudio.utils.eval_utils import eval_setup

    config, _ = fusion_run
    moved = copy.deepcopy(config)  # the run copied elsewhere, so that the damage stays there
    moved.output_dir = tmp_path / "out"
    copy_dir = moved.get_base_dir()
    shutil.copytree(config.get_base_dir(), copy_dir)
    moved.save_config()
    yaml_path = copy_dir / "config.yml"
    checkpoint = sorted((copy_dir / "nerfstudio_models").glob("*.ckpt"))[-1]
    state = torch.load(checkpoint, map_location="cpu")
    folders = [f.replace(str(config.get_base_dir()), str(copy_dir))
               for f in state["pipeline"]["_extra_state"]["repaired_round_folders"]]
    state["pipeline"]["_extra_state"]["repaired_round_folders"] = folders
    torch.save(state, checkpoint)
    last = Path(folders[-1])
    if damage == "truncated-manifest":
        manifest = last / "manifest.json"
        manifest.write_text(manifest.read_text()[:40])
    else:
        (last / "frame_0001.png").unlink()
    _, pipeline, _, _ = eval_setup(yaml_path, test_mode="test")
    assert "skipping the repaired frames" in capsys.readouterr().out
    assert len(pipeline.datamanager.train_dataset) == pipeline.datamanager.num_real_views
    assert 0 < pipeline.get_average_eval_image_metrics()["psnr"] < 60


def test_resume_repairs_the_same_frames_as_the_uninterrupted_run(fusion_run, tmp_path):
    from PIL import Image

    config, trainer = fusion_run
    checkpoint = config.get_checkpoint_dir() / "step-000000010.ckpt"  # between the rounds at 6 and 12
    resumed_config = fusion_config(config.pipeline.datamanager.data, tmp_path / "resumed")
    resumed_config.load_checkpoint = checkpoint
    resumed = train(resumed_config)
    ours, reference = _round_folders(resumed_config), _round_folders(config)
    assert [f.name for f in ours] == [f.name for f in reference[1:]]  # rounds 1, 2 at steps 12, 18
    for a, b in zip(ours, reference[1:]):
        assert json.loads((a / "manifest.json").read_text())["frames"] == \
            json.loads((b / "manifest.json").read_text())["frames"]  # same poses
        for frame in sorted(a.glob("frame_*.png")):
            assert (torch.tensor(list(Image.open(frame).getdata())) ==
                    torch.tensor(list(Image.open(b / frame.name).getdata()))).all(), frame
    for name, param in trainer.pipeline.model.gauss_params.items():
        torch.testing.assert_close(resumed.pipeline.model.gauss_params[name], param, msg=name)


def test_ctrl_c_during_a_round_saves_a_checkpoint_and_leaves_no_half_round(tiny_scene, tmp_path, monkeypatch):
    from genfusion_ns.fusion import repair

    original = repair.render_rgbd
    calls = []

    def interrupted_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C while the first round renders its clips
        return original(*args, **kwargs)

    monkeypatch.setattr(repair, "render_rgbd", interrupted_render)
    config = fusion_config(tiny_scene, tmp_path / "runs")
    trainer = set_up(config)
    handler_before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    with pytest.raises(UserExit) as stopped:
        trainer.train()
    assert stopped.value.code == 130
    assert [p.name for p in config.get_checkpoint_dir().glob("*.ckpt")] == ["step-000000005.ckpt"]
    repaired = config.get_base_dir() / "genfusion_repaired"
    assert not repaired.exists() or not list(repaired.iterdir())
    assert signal.getsignal(signal.SIGINT) is handler_before  # the trainer's Ctrl+C handler is gone again


def test_no_training_photo_to_decide_unobserved_pixels_fails_at_start_up(tiny_scene, tmp_path):
    from genfusion_ns.fusion.pipeline import FusionSettingsError

    config = fusion_config(tiny_scene, tmp_path / "runs", repaired_pixels="unobserved", unobserved_views=0).pipeline
    with pytest.raises(FusionSettingsError, match="unobserved-views"):
        config.setup(device="cpu", test_mode="val")
