"""Repaired views in nerfstudio's live viewer: frustums, thumbnails, removal, never breaking training."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import viser.transforms as vtf
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

from genfusion_ns.fusion import viewer as fusion_viewer
from genfusion_ns.fusion.views import RepairedViews


class FakeHandle:
    def __init__(self, kwargs):
        self.kwargs = kwargs
        self.removed = 0
        self.click_callbacks = []

    def remove(self):
        self.removed += 1

    def on_click(self, callback):
        self.click_callbacks.append(callback)


class FakeScene:
    def __init__(self, fail_at=None):
        self.calls, self.fail_at = [], fail_at

    def add_camera_frustum(self, **kwargs):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("viser is gone")
        self.calls.append(kwargs)
        return FakeHandle(kwargs)


def fake_viewer(fail_at=None, scale=0.07):
    return SimpleNamespace(viser_server=SimpleNamespace(scene=FakeScene(fail_at)),
                           config=SimpleNamespace(camera_frustum_scale=scale))


def make_views(n=3, h=120, w=240, round_index=4) -> RepairedViews:
    c2w = torch.eye(4)[:3].expand(n, 3, 4).clone()
    c2w[:, :, 3] = torch.tensor([[0.5 * i, -0.25, 1.0 + i] for i in range(n)])
    cos, sin = math.cos(0.3), math.sin(0.3)
    c2w[0, :3, :3] = torch.tensor([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])  # a yawed first view
    return RepairedViews(camera_to_worlds=c2w, fx=torch.full((n,), 200.0), fy=torch.full((n,), 150.0),
                         cx=torch.full((n,), w / 2), cy=torch.full((n,), h / 2),
                         rgb=torch.randint(0, 255, (n, h, w, 3), dtype=torch.uint8),
                         depth=torch.ones(n, h, w), round_index=round_index, step=100)


def test_one_frustum_per_view_with_pose_image_and_fov():
    viewer, views = fake_viewer(), make_views()
    handles = fusion_viewer.show_repaired_views(viewer, views)
    calls = viewer.viser_server.scene.calls
    assert len(handles) == len(calls) == 3
    assert [c["name"] for c in calls] == [f"/genfusion_repaired/round_04/view_{i:04d}" for i in range(3)]
    for i, call in enumerate(calls):
        c2w = views.camera_to_worlds[i].numpy()
        np.testing.assert_allclose(call["position"], c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO, rtol=1e-6)
        # Same orientation as nerfstudio's own frustums (OpenGL camera turned half a turn about its X axis).
        expected = (vtf.SO3.from_matrix(c2w[:3, :3].astype(np.float64)) @ vtf.SO3.from_x_radians(np.pi)).wxyz
        assert min(np.abs(call["wxyz"] - expected).max(), np.abs(call["wxyz"] + expected).max()) < 1e-6
        image = call["image"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert max(image.shape[:2]) <= 100 and image.shape[:2] == (50, 100)
        assert call["fov"] == pytest.approx(2 * math.atan(120 / (2 * 150.0)))
        assert call["aspect"] == pytest.approx(2.0)
        assert call["scale"] == 0.07
        assert tuple(call["color"]) != (20, 20, 20)  # distinct from viser's default training-camera colour
    assert all(len(h.click_callbacks) == 1 for h in handles)


def test_small_images_are_not_enlarged_and_round_index_can_be_given():
    viewer = fake_viewer()
    fusion_viewer.show_repaired_views(viewer, make_views(n=1, h=8, w=12), round_index=7)
    (call,) = viewer.viser_server.scene.calls
    assert call["name"] == "/genfusion_repaired/round_07/view_0000" and call["image"].shape == (8, 12, 3)


def test_removal_removes_every_handle_and_empties_the_list():
    viewer = fake_viewer()
    handles = fusion_viewer.show_repaired_views(viewer, make_views())
    drawn = list(handles)
    fusion_viewer.remove_repaired_views(handles)
    assert handles == [] and all(h.removed == 1 for h in drawn)


def test_no_viewer_is_a_no_op():
    views = make_views()
    assert fusion_viewer.show_repaired_views(None, views) == []
    assert fusion_viewer.show_repaired_views(SimpleNamespace(), views) == []  # e.g. the legacy viewer
    fusion_viewer.remove_repaired_views([])


def test_viser_errors_never_reach_training(capsys):
    viewer = fake_viewer(fail_at=1)
    handles = fusion_viewer.show_repaired_views(viewer, make_views())
    assert len(handles) == 1  # drawn before the failure, kept so they can still be removed
    assert "could not show" in capsys.readouterr().out

    class Broken:
        def remove(self):
            raise RuntimeError("already gone")

    handles = [Broken(), Broken()]
    fusion_viewer.remove_repaired_views(handles)
    assert handles == [] and "could not remove" in capsys.readouterr().out


def test_pipeline_shows_rounds_and_drops_them_on_reload(tiny_scene, tmp_path):
    from genfusion_ns.method_configs import genfusion_lite_config

    config = genfusion_lite_config().pipeline
    config.datamanager.data = tiny_scene
    config.video_model = "none"
    pipeline = config.setup(device="cpu", test_mode="val")
    assert pipeline._viewer is None
    # No viewer: nothing drawn.
    pipeline._add_round(make_views(n=2, h=32, w=32), tmp_path / "round_04", save=True)
    assert pipeline._viewer_handles == []
    pipeline._viewer = fake_viewer()
    pipeline._add_round(make_views(n=2, h=32, w=32, round_index=5), tmp_path / "round_05", save=True)
    drawn = list(pipeline._viewer_handles)
    assert [h.kwargs["name"] for h in drawn] == ["/genfusion_repaired/round_05/view_0000",
                                                 "/genfusion_repaired/round_05/view_0001"]
    pipeline.set_extra_state({})
    assert pipeline._viewer_handles == [] and all(h.removed == 1 for h in drawn)
