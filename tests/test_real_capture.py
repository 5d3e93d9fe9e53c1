"""The real-capture path end to end on the committed lund frames: a posed capture without seed points, a walking
trajectory, 4:3 frames through the square shipped video model, one short ``genfusion-lite`` round."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from run_configs import finish, short_cpu_run

LUND_SMALL = Path(__file__).parent / "data" / "lund_small"


@pytest.mark.slow
def test_genfusion_lite_round_on_a_real_capture_without_seed_points(tmp_path, single_torch_thread):
    from genfusion_ns.fusion.views import RepairedViews
    from genfusion_ns.method_configs import genfusion_lite

    data = tmp_path / "lund"
    shutil.copytree(LUND_SMALL / "images", data / "images")
    meta = json.loads((LUND_SMALL / "transforms.json").read_text())
    meta.pop("ply_file_path")  # poses only, as from a phone's AR session or another SfM tool
    (data / "transforms.json").write_text(json.dumps(meta))

    config = short_cpu_run(genfusion_lite.config, data, tmp_path / "outputs", 6)
    pipeline = config.pipeline
    pipeline.fusion_start, pipeline.fusion_every = 3, 100
    pipeline.trajectory_frames, pipeline.num_inference_steps = 10, 2
    pipeline.model.exposure_compensation = True  # phone photos: exposure changes from one to the next
    finish(config)
    torch.manual_seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    assert model.num_points > 500  # triangulated where the views agree, not the 2000-surfel random box
    assert trainer.pipeline.trajectory_mode() == "walk"  # a forward walk down a street
    trainer.train()

    assert trainer.pipeline.completed_rounds == 1
    # One affine per photo, trained through nerfstudio's optimizers; none for the repaired frames.
    assert model.exposure.num_images == trainer.pipeline.datamanager.num_real_views
    assert float(model.exposure.log_gain.abs().sum()) > 0
    assert "exposure.log_gain" in model.state_dict()
    views = RepairedViews.load(Path(trainer.pipeline.repaired_round_folders[-1]))
    height, width = trainer.pipeline.datamanager.cached_train[0]["image"].shape[:2]
    assert (views.height, views.width) == (height, width)  # the whole 4:3 frame, not a square crop of it
    assert views.rgb.shape[0] == 10 and bool(torch.isfinite(views.depth).all())
    datamanager = trainer.pipeline.datamanager
    real = datamanager.train_dataset.cameras[: datamanager.num_real_views].camera_to_worlds[:, :3, 3]
    repaired = views.camera_to_worlds[:, :3, 3]
    # The walk stays along the street: every repaired camera lies between the first and last training cameras.
    walk = real[-1] - real[0]
    along = (repaired - real[0]) @ walk / walk.norm() ** 2
    assert bool((along > -0.1).all() and (along < 1.1).all())


def test_colmap_points_seed_a_dataset_without_ply_and_nothing_asks_or_rewrites(tmp_path, monkeypatch):
    """A dataset with colmap/sparse/0 but no ply_file_path (older ns-process-data, other tools): nerfstudio would ask
    on the terminal whether to rewrite transforms.json; the points are used as they are, the dataset is untouched."""
    import rich.prompt

    from genfusion_ns.model.dataparser import ValidatedNerfstudioDataParserConfig

    def no_prompt(*args, **kwargs):
        raise AssertionError("nerfstudio's interactive prompt was reached")

    monkeypatch.setattr(rich.prompt.Confirm, "ask", no_prompt)
    with_ply = ValidatedNerfstudioDataParserConfig(data=LUND_SMALL, load_3D_points=True).setup()
    expected = with_ply.get_dataparser_outputs("train").metadata

    data = tmp_path / "lund"
    shutil.copytree(LUND_SMALL, data)
    (data / "sparse_pc.ply").unlink()
    meta = json.loads((data / "transforms.json").read_text())
    meta.pop("ply_file_path")
    text = json.dumps(meta)
    (data / "transforms.json").write_text(text)
    parser = ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True).setup()
    metadata = parser.get_dataparser_outputs("train").metadata

    assert torch.allclose(metadata["points3D_xyz"], expected["points3D_xyz"], atol=1e-5)
    assert torch.equal(metadata["points3D_rgb"], expected["points3D_rgb"])
    assert (data / "transforms.json").read_text() == text and not (data / "sparse_pc.ply").exists()
