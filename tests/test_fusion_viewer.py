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
        self.calls, self.fail_at, self.frames = [], fail_at, []

    def add_camera_frustum(self, **kwargs):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("viser is gone")
        self.calls.append(kwargs)
        return FakeHandle(kwargs)

    def add_frame(self, name, show_axes=True, **kwargs):
        frame = SimpleNamespace(name=name, show_axes=show_axes, visible=True)
        self.frames.append(frame)
        return frame


class FakeCheckbox:
    def __init__(self, label, initial_value, **kwargs):
        self.label, self.value, self.callbacks = label, initial_value, []

    def on_update(self, callback):
        self.callbacks.append(callback)

    def click(self):
        """What viser does when the browser ticks or unticks the box."""
        self.value = not self.value
        for callback in self.callbacks:
            callback(SimpleNamespace(target=self))


class FakeGui:
    def __init__(self):
        self.checkboxes = []

    def add_checkbox(self, label, initial_value, **kwargs):
        self.checkboxes.append(FakeCheckbox(label, initial_value, **kwargs))
        return self.checkboxes[-1]


def fake_viewer(fail_at=None, scale=0.07, train_positions=()):
    """nerfstudio's Viewer as show_repaired_views sees it; ``train_positions`` are drawn training frustums."""
    handles = {i: SimpleNamespace(position=np.asarray(p, dtype=float)) for i, p in enumerate(train_positions)}
    return SimpleNamespace(viser_server=SimpleNamespace(scene=FakeScene(fail_at), gui=FakeGui()),
                           config=SimpleNamespace(camera_frustum_scale=scale), camera_handles=handles)


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
        # The repaired cameras span 20 viewer units (x 0..10, z 10..30): 4% of that, not nerfstudio's 0.07.
        assert call["scale"] == pytest.approx(0.04 * 20.0)
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
    views = make_views(n=2, h=32, w=32)
    pipeline._add_round(views, tmp_path / "round_04", views.save(tmp_path / "round_04"))
    assert pipeline._viewer_handles == []
    pipeline._viewer = fake_viewer()
    views = make_views(n=2, h=32, w=32, round_index=5)
    pipeline._add_round(views, tmp_path / "round_05", views.save(tmp_path / "round_05"))
    drawn = list(pipeline._viewer_handles)
    assert [h.kwargs["name"] for h in drawn] == ["/genfusion_repaired/round_05/view_0000",
                                                 "/genfusion_repaired/round_05/view_0001"]
    pipeline.set_extra_state({})
    assert pipeline._viewer_handles == [] and all(h.removed == 1 for h in drawn)


def test_frustum_scale_is_a_share_of_the_cameras_extent():
    ring = np.array([[10 * math.cos(a), 0.5, 10 * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 13)])
    assert fusion_viewer.frustum_scale(ring, minimum=0.1) == pytest.approx(0.04 * 20.0)
    # The same share of the scene at any scale...
    assert fusion_viewer.frustum_scale(ring * 10, minimum=0.1) == pytest.approx(10 * 0.04 * 20.0)
    # ...but never smaller than nerfstudio's own frustums, and a lone camera gets exactly that size.
    assert fusion_viewer.frustum_scale(ring / 100, minimum=0.1) == 0.1
    assert fusion_viewer.frustum_scale(ring[:1], minimum=0.3) == 0.3
    assert fusion_viewer.frustum_scale(np.zeros((0, 3)), minimum=0.3) == 0.3


def test_frustums_are_sized_by_the_training_cameras_too():
    # Training frustums 60 viewer units apart: the repaired views (spanning 20) are sized to the whole scene.
    viewer = fake_viewer(train_positions=[(-30.0, 0.0, 0.0), (30.0, 0.0, 0.0)])
    fusion_viewer.show_repaired_views(viewer, make_views())
    assert [c["scale"] for c in viewer.viser_server.scene.calls] == pytest.approx([0.04 * 60.0] * 3)


def test_frustum_colour_stands_apart_from_the_viewer_colours():
    colour = np.array(fusion_viewer.FRUSTUM_COLOR)
    for other in [(20, 20, 20), (255, 211, 105), (0, 0, 0), (255, 255, 255)]:  # frustums, accent, backgrounds
        assert np.abs(colour - np.array(other)).max() >= 150


def test_one_checkbox_shows_and_hides_every_round():
    viewer = fake_viewer()
    scene, gui = viewer.viser_server.scene, viewer.viser_server.gui
    fusion_viewer.show_repaired_views(viewer, make_views(round_index=1))
    fusion_viewer.show_repaired_views(viewer, make_views(round_index=2))
    assert [f.name for f in scene.frames] == ["/genfusion_repaired"] and not scene.frames[0].show_axes
    (checkbox,) = gui.checkboxes  # created once per viewer, not once per round
    assert checkbox.label == "Show repaired views" and checkbox.value is True
    # Every frustum hangs under the node the checkbox toggles, so rounds drawn later follow it too.
    assert all(c["name"].startswith("/genfusion_repaired/") for c in scene.calls)
    checkbox.click()
    assert scene.frames[0].visible is False
    checkbox.click()
    assert scene.frames[0].visible is True


def test_a_viewer_started_after_loading_draws_the_restored_rounds(tiny_scene, tmp_path):
    """``ns-viewer`` builds its viewer after the checkpoint is loaded: nerfstudio hands it to the pipeline's public
    ``ViewerControl``, which draws the rounds already in the training set."""
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerControl

    from genfusion_ns.method_configs import genfusion_lite_config

    config = genfusion_lite_config().pipeline
    config.datamanager.data = tiny_scene
    config.video_model = "none"
    pipeline = config.setup(device="cpu", test_mode="test")
    views = make_views(n=2, h=32, w=32, round_index=3)
    pipeline._add_round(views, tmp_path / "round_03", views.save(tmp_path / "round_03"))  # as set_extra_state does
    assert pipeline._viewer_handles == []
    controls = [control for _, control in parse_object(pipeline, ViewerControl, "Custom Elements")]
    assert len(controls) == 1
    viewer = fake_viewer()
    controls[0]._setup(viewer)  # what nerfstudio's viewer does to every control it finds
    assert pipeline._viewer is viewer
    assert [h.kwargs["name"] for h in pipeline._viewer_handles] == ["/genfusion_repaired/round_03/view_0000",
                                                                     "/genfusion_repaired/round_03/view_0001"]
