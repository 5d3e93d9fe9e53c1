"""Fusion building blocks: round schedule, repaired-view weight, run-time views in the datamanager, render windows,
and the video-model resolver."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from genfusion_ns.fusion.repair import RenderWindow
from genfusion_ns.fusion.schedule import repair_round_steps, repaired_view_weight, resolve_schedule
from genfusion_ns.fusion.video_model import VideoModelUnavailable, load_video_pipeline
from genfusion_ns.fusion.views import RepairedViews


def test_round_steps_match_the_authors_sparse_schedule():
    assert repair_round_steps(1000, 1000, 7000, 7000) == [1000, 2000, 3000, 4000, 5000, 6000]
    assert repair_round_steps(3000, 1000, 7000, 7000) == [3000, 4000, 5000, 6000]
    assert repair_round_steps(500, 500, 2000, 1200) == [500, 1000]
    with pytest.raises(ValueError, match="fusion_every"):
        repair_round_steps(0, 0, 10, 10)


def test_repaired_view_weight_is_a_sine_bump():
    assert repaired_view_weight(1000, 1000, 7000, 1.0) == 0.0
    assert repaired_view_weight(4000, 1000, 7000, 1.0) == pytest.approx(1.0)
    assert repaired_view_weight(5000, 3000, 7000, 0.5) == pytest.approx(0.5)
    assert repaired_view_weight(2500, 1000, 7000, 1.0) == pytest.approx(math.sin(math.pi * 0.25))
    assert repaired_view_weight(7000, 1000, 7000, 1.0) == 0.0
    assert repaired_view_weight(500, 1000, 7000, 1.0) == 0.0


def test_render_window_is_the_full_training_frame():
    from nerfstudio.cameras.cameras import Cameras

    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=100.0, fy=90.0, cx=64.0, cy=40.0, width=128,
                     height=72)
    window = RenderWindow.of_camera(camera)
    assert (window.fx, window.fy, window.cx, window.cy, window.width, window.height) == (100.0, 90.0, 64.0, 40.0,
                                                                                          128, 72)


def make_views(n: int, h: int = 8, w: int = 12, value: int = 7) -> RepairedViews:
    c2w = torch.eye(4)[:3].expand(n, 3, 4).clone()
    c2w[:, 2, 3] = torch.arange(n, dtype=torch.float32)
    return RepairedViews(camera_to_worlds=c2w, fx=torch.full((n,), 10.0), fy=torch.full((n,), 10.0),
                         cx=torch.full((n,), w / 2), cy=torch.full((n,), h / 2),
                         rgb=torch.full((n, h, w, 3), value, dtype=torch.uint8),
                         depth=torch.rand(n, h, w) + 1.0, round_index=2, step=300)


def test_repaired_views_round_trip_through_disk(tmp_path):
    views = make_views(3)
    images, depths = views.save(tmp_path / "round", scene_to_file_depth=250.0)
    assert len(images) == 3 and all(p.exists() for p in depths)
    back = RepairedViews.load(tmp_path / "round")
    assert torch.equal(back.rgb, views.rgb)
    assert torch.allclose(back.depth, views.depth, rtol=1e-6)
    assert torch.allclose(back.camera_to_worlds, views.camera_to_worlds)
    assert (back.round_index, back.step) == (2, 300)


def test_datamanager_grows_samples_separately_and_shrinks(tiny_scene, tmp_path):
    from genfusion_ns.method_configs import fusion_datamanager

    config = fusion_datamanager()
    config.data = tiny_scene
    dm = config.setup(device="cpu")
    assert dm.num_real_views == 3 and dm.next_repaired(0) is None
    views = make_views(4, h=32, w=32)
    images, depths = views.save(tmp_path / "r0", dm.scene_to_file_depth)
    new = dm.add_repaired_views(views, images, depths)
    assert new == [3, 4, 5, 6] and len(dm.train_dataset) == 7 and len(dm.cached_train) == 7
    assert dm.train_cameras.shape[0] == 7
    # Real views only from next_train, repaired only from next_repaired, each index once per pass.
    real = {int(dm.next_train(i)[0].metadata["cam_idx"]) for i in range(6)}
    assert real == {0, 1, 2}
    repaired = [int(dm.next_repaired(i)[0].metadata["cam_idx"]) for i in range(4)]
    assert sorted(repaired) == [3, 4, 5, 6]
    camera, batch = dm.next_repaired(5)
    assert batch["image"].shape == (32, 32, 3) and batch["is_repaired"]
    assert torch.allclose(batch["repaired_depth"][..., 0], views.depth[int(camera.metadata["cam_idx"]) - 3])
    # The dataset view (used by the viewer) reads the written files back, depth included.
    item = dm.train_dataset[5]
    assert item["image"].shape[:2] == (32, 32)
    if "depth_image" in item:
        assert torch.allclose(item["depth_image"][..., 0], views.depth[2], rtol=1e-4)
    assert dm.remove_repaired_views() == 4
    assert len(dm.train_dataset) == 3 and len(dm.cached_train) == 3 and dm.next_repaired(0) is None


def test_video_model_resolver(tmp_path):
    assert load_video_pipeline("none", "cpu") is None
    tiny = load_video_pipeline("random-tiny", "cpu", seed=0)
    assert tiny.config.num_frames >= 1
    tiny.save_pretrained(tmp_path / "model")
    again = load_video_pipeline(str(tmp_path / "model"), "cpu")
    a = next(tiny.unet.parameters())
    b = next(again.unet.parameters())
    assert torch.equal(a, b)
    with pytest.raises(VideoModelUnavailable, match="download|not|missing"):
        load_video_pipeline(str(tmp_path / "no-such-model"), "cpu")


def test_missing_default_model_is_reported_at_start_up(tiny_scene, monkeypatch, tmp_path):
    from genfusion_ns.fusion import video_model
    from genfusion_ns.method_configs import genfusion_lite_config

    monkeypatch.setattr(video_model, "SHIPPED_MODEL_DIR", tmp_path / "not-installed")
    config = genfusion_lite_config().pipeline
    config.datamanager.data = tiny_scene
    with pytest.raises(VideoModelUnavailable, match="random-tiny"):
        config.setup(device="cpu", test_mode="val")
    config.video_model = "none"
    assert config.setup(device="cpu", test_mode="val").fusion_enabled is False


def test_only_views_that_feed_densification_update_its_statistics(tiny_scene):
    """Repaired views render with ``feeds_densification`` False by default: they must leave the statistics alone,
    and with True both views of a step count."""
    from nerfstudio.configs.method_configs import all_methods

    from genfusion_ns.model.genfusion_model import FEEDS_DENSIFICATION_KEY

    config = copy.deepcopy(all_methods["genfusion-2dgs-lite"].pipeline)
    config.datamanager.data = tiny_scene
    pipeline = config.setup(device="cpu", test_mode="val")
    _ = pipeline.datamanager.cached_train  # builds the device copy of the training cameras
    model = pipeline.model
    model.train()
    model.strategy_state["scene_extent"] = 1.0
    model.optimizers = {}  # no densification step happens at step 1; the statistics update needs none

    def visible_total(feeds_second: bool) -> float:
        model.strategy_state = model.strategy.initialize_state(1.0)
        loss = 0.0
        for index, feeds in ((0, True), (1, feeds_second)):
            camera = pipeline.datamanager.train_cameras[index : index + 1]
            camera.metadata = {"cam_idx": index, FEEDS_DENSIFICATION_KEY: feeds}
            loss = loss + model(camera)["rgb"].sum()
        loss.backward()
        model.step_post_backward(step=1)
        return float(model.strategy_state["visible_count"].sum())

    one_view, two_views = visible_total(False), visible_total(True)
    assert one_view > 0 and two_views > one_view


def test_repaired_views_train_only_every_nth_step():
    from types import SimpleNamespace

    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig

    class Called(Exception):
        pass

    def next_repaired(step):
        raise Called(step)

    config = GenFusionPipelineConfig(fusion_start=10, fusion_every=10, fusion_until=100, repaired_every=3)
    fake = SimpleNamespace(config=config, schedule=resolve_schedule(100, 0.1, 0.1, 1.0, 10, 10, 100),
                           datamanager=SimpleNamespace(repaired_indices=[0], next_repaired=next_repaired))
    trained = []
    for step in range(20, 30):
        try:
            assert GenFusionPipeline._repaired_losses(fake, step) == {}
        except Called:
            trained.append(step)
    assert trained == [21, 24, 27]


def test_repair_strength_moves_linearly_to_the_last_rounds():
    from types import SimpleNamespace

    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig
    from genfusion_ns.fusion.repair import RepairSettings

    def strengths(last):
        config = GenFusionPipelineConfig(repair_strength=0.5, repair_strength_last=last)
        fake = SimpleNamespace(config=config, repair_settings=RepairSettings(strength=0.5, guidance_scale=1.5),
                               _round_steps=frozenset({275, 550, 825}))
        settings = [GenFusionPipeline.round_settings(fake, step) for step in (275, 550, 825)]
        assert all(s.guidance_scale == 1.5 for s in settings)  # only the strength moves
        return [round(s.strength, 6) for s in settings]

    assert strengths(None) == [0.5, 0.5, 0.5]
    assert strengths(0.25) == [0.5, 0.375, 0.25]
    assert strengths(1.0) == [0.5, 0.75, 1.0]


def test_the_crop_trajectory_has_its_own_repaired_view_weight():
    from genfusion_ns.fusion.pipeline import GenFusionPipelineConfig

    def peak(**fields):
        return GenFusionPipelineConfig(**fields).repaired_view_peak_weight()

    assert peak(trajectory="crop", lambda_reg=1.0) == 0.5  # the authors' masked recipe
    assert peak(trajectory="crop", lambda_reg=1.0, crop_lambda_reg=0.25) == 0.25
    assert peak(trajectory="crop", lambda_reg=0.8, crop_lambda_reg=None) == 0.8
    assert peak(trajectory="sparse", lambda_reg=1.0, crop_lambda_reg=0.25) == 1.0
    assert peak(trajectory="auto", lambda_reg=0.7) == 0.7


def test_change_sigma_reaches_the_video_model_only_when_set():
    from genfusion_ns.fusion.repair import RepairSettings

    assert "change_sigma" not in RepairSettings().sampling_kwargs()  # models without residual decoding never see it
    assert RepairSettings(change_sigma=3.0).sampling_kwargs()["change_sigma"] == 3.0
    with pytest.raises(ValueError, match="repair-change-sigma"):
        RepairSettings(change_sigma=-1.0).validate()


def test_benchmark_overrides_set_typed_fields_and_refuse_unknown_ones():
    from types import SimpleNamespace

    from genfusion_ns.runner import RunError, apply_overrides

    config = SimpleNamespace(pipeline=SimpleNamespace(repair_strength_last=None, trajectory="auto", model=SimpleNamespace(
        exposure_compensation=False)))
    apply_overrides(config, ["pipeline.repair-strength-last=0.25", "pipeline.trajectory=crop",
                             "pipeline.model.exposure_compensation=true"])
    assert config.pipeline.repair_strength_last == 0.25 and config.pipeline.trajectory == "crop"
    assert config.pipeline.model.exposure_compensation is True
    for bad in ("pipeline.repair_strength_lats=0.2", "pipeline.nothing.x=1", "no-equals-sign"):
        with pytest.raises(RunError):
            apply_overrides(config, [bad])


def test_identity_video_model_returns_the_renders():
    from genfusion_ns.fusion.video_model import load_video_pipeline

    pipe = load_video_pipeline("identity", "cpu")
    rgb, depth = torch.rand(3, 8, 8, 3), torch.rand(3, 8, 8)
    out = pipe(rgb, depth, rgb[0], num_inference_steps=5)
    assert torch.equal(out.rgb, rgb) and torch.equal(out.depth, depth) and out.rgb is not rgb
    assert pipe.config.num_frames >= 1 and pipe.to("cpu") is pipe


def test_the_shipped_default_model_loads_and_repairs():
    from genfusion_ns.fusion.video_model import check_video_model_spec, load_video_pipeline, shipped_model_dir

    check_video_model_spec("default")  # installed with the package: genfusion starts without naming a model
    size = sum(f.stat().st_size for f in shipped_model_dir().rglob("*") if f.is_file())
    assert size <= 30 * 2**20
    pipe = load_video_pipeline("default", "cpu")
    assert pipe.unet.dtype == torch.float32  # stored in float16, upcast on CPU
    assert (pipe.config.num_frames, pipe.config.height, pipe.config.width) == (8, 96, 96)
    assert pipe.config.residual_decode
    generator = torch.Generator().manual_seed(0)
    rgb, depth = torch.rand(8, 96, 96, 3, generator=generator), 1.0 + torch.rand(8, 96, 96, generator=generator)
    out = pipe(rgb, depth, rgb[0], num_inference_steps=4, guidance_scale=1.5, strength=0.5, generator=generator,
               output_type="pt")
    assert out.rgb.shape == (8, 96, 96, 3) and torch.isfinite(out.rgb).all() and torch.isfinite(out.depth).all()
