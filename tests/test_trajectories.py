"""Novel trajectories: valid cameras that look at the scene and stay within the capture's bounds."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genfusion_ns.fusion import trajectories as tj


def ring_of_cameras(n: int = 8, radius: float = 2.0, height: float = 0.4, jitter: float = 0.0) -> torch.Tensor:
    """OpenGL c2w poses on a circle around the origin, looking at it (z up)."""
    g = torch.Generator().manual_seed(0)
    angles = torch.linspace(0, 2 * torch.pi, n + 1)[:-1]
    eyes = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles), torch.full((n,), height)], -1)
    eyes = eyes + jitter * torch.randn(eyes.shape, generator=g)
    return tj.look_at(eyes, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))


def assert_valid_rotations(c2w: torch.Tensor) -> None:
    rot = c2w[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand_as(rot), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot)), atol=1e-5)


def test_focus_point_of_a_ring_is_its_centre():
    assert torch.allclose(tj.focus_point(ring_of_cameras(jitter=0.05)), torch.zeros(3), atol=0.1)
    shifted = ring_of_cameras()
    shifted[:, :3, 3] += torch.tensor([1.0, -2.0, 0.5])  # translate the whole rig: the focus point follows
    assert torch.allclose(tj.focus_point(shifted), torch.tensor([1.0, -2.0, 0.5]), atol=1e-4)


def test_sparse_ellipse_looks_at_scene_and_stays_in_bounds():
    train = ring_of_cameras(n=3, jitter=0.05)
    centre = tj.focus_point(train)
    for round_index in range(4):
        poses = tj.sparse_ellipse(train, 24, round_index, torch.Generator().manual_seed(round_index))
        assert poses.shape == (24, 3, 4)
        assert_valid_rotations(poses)
        to_centre = torch.nn.functional.normalize(centre - tj.camera_centers(poses), dim=-1)
        # The focus point is in front of every camera (pitch grows by 2 degrees per round only).
        assert (torch.sum(to_centre * tj.forward_axes(poses), -1) > 0.9).all()
        radius = tj.camera_centers(poses)[:, :2].norm(dim=-1)
        assert radius.max() < 2.0 * 1.2 * 1.3 and radius.min() > 0.5
    a = tj.sparse_ellipse(train, 24, 0, torch.Generator().manual_seed(0))
    b = tj.sparse_ellipse(train, 24, 3, torch.Generator().manual_seed(0))
    assert not torch.allclose(a, b)  # every round shows different views


def test_rotation_trajectory_looks_sideways():
    train = ring_of_cameras(n=6)
    straight = tj.rotation_trajectory(train, 16, angle_degrees=0.0)
    turned = tj.rotation_trajectory(train, 16, angle_degrees=90.0)
    assert_valid_rotations(turned)
    cos = torch.sum(tj.forward_axes(straight) * tj.forward_axes(turned), -1)
    assert torch.allclose(cos, torch.zeros(16), atol=1e-5)
    assert torch.allclose(tj.camera_centers(straight), tj.camera_centers(turned))


def test_crop_trajectory_is_the_training_path():
    train = ring_of_cameras(n=5)
    assert torch.equal(tj.crop_trajectory(train), train)


def test_viewer_camera_path(tmp_path):
    train = ring_of_cameras(n=10)
    full = torch.cat([train, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(10, 1, 4)], dim=1)
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"camera_path": [{"camera_to_world": m.reshape(-1).tolist(), "fov": 50} for m in full]}))
    poses = tj.load_viewer_camera_path(path, num_frames=4)
    assert torch.allclose(poses, train[[0, 3, 6, 9]], atol=1e-6)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keyframes": []}))
    with pytest.raises(ValueError, match="camera_path"):
        tj.load_viewer_camera_path(bad)
    with pytest.raises(FileNotFoundError, match="viewer"):
        tj.load_viewer_camera_path(tmp_path / "missing.json")


def test_nearest_training_view_prefers_position_and_direction():
    train = ring_of_cameras(n=8)
    clip = train[2:3].clone()
    clip[:, :3, 3] *= 1.1
    assert tj.nearest_training_view(clip, train) == 2


def test_every_mode_sees_the_generated_scene(tiny_dense_scene, tmp_path):
    """On a real (nerfstudio-normalised) capture, trajectory cameras stay near the capture and see its surfaces:
    the scene's seed points project into every frame."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=tiny_dense_scene, load_3D_points=True).setup().get_dataparser_outputs("train")
    cameras, points = outputs.cameras, outputs.metadata["points3D_xyz"].float()
    train = cameras.camera_to_worlds.float()
    path_file = tmp_path / "path.json"
    full = torch.cat([train, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(train), 1, 4)], dim=1)
    path_file.write_text(json.dumps({"camera_path": [{"camera_to_world": m.reshape(-1).tolist()} for m in full]}))
    modes = {
        "sparse": tj.sparse_ellipse(train, 12, 1, torch.Generator().manual_seed(0)),
        "crop": tj.crop_trajectory(train),
        "rotation": tj.rotation_trajectory(train, 12, 90.0),
        "path": tj.load_viewer_camera_path(path_file, 8),
    }
    centres = tj.camera_centers(train)
    low, high = centres.min(0).values, centres.max(0).values
    margin = 0.5 * (high - low).max()
    fx, cx, cy = float(cameras.fx[0]), float(cameras.cx[0]), float(cameras.cy[0])
    width, height = int(cameras.width[0]), int(cameras.height[0])
    for name, poses in modes.items():
        assert_valid_rotations(poses)
        positions = tj.camera_centers(poses)
        assert ((positions > low - margin) & (positions < high + margin)).all(), name
        for pose in poses:
            local = (points - pose[:, 3]) @ pose[:, :3]  # OpenGL camera frame: looking down -z
            z = -local[:, 2]
            u = fx * local[:, 0] / z.clamp(min=1e-6) + cx
            v = -fx * local[:, 1] / z.clamp(min=1e-6) + cy
            seen = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            assert int(seen.sum()) >= 10, f"{name}: a camera sees {int(seen.sum())} scene points"


def walking_cameras(n: int = 6, step: float = 0.3) -> torch.Tensor:
    """OpenGL cameras walking down the +y axis and looking along it (z up): a forward, narrow capture."""
    eyes = torch.stack([0.02 * torch.sin(torch.arange(n) * 1.0), step * torch.arange(n), torch.full((n,), 1.5)], -1)
    return tj.look_at(eyes, eyes + torch.tensor([0.0, 10.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))


def test_auto_tells_inward_from_walking_captures():
    assert tj.is_inward_facing(ring_of_cameras(n=8))
    assert tj.is_inward_facing(ring_of_cameras(n=3, jitter=0.05))
    assert not tj.is_inward_facing(walking_cameras())
    assert not tj.is_inward_facing(walking_cameras()[:1])


def test_walk_follows_the_training_cameras_and_looks_where_they_look():
    train = walking_cameras(n=4, step=0.5)
    poses = tj.walk_trajectory(train, 30, round_index=1, generator=torch.Generator().manual_seed(0), sway=0.25)
    assert poses.shape == (30, 3, 4)
    assert_valid_rotations(poses)
    centres, train_centres = tj.camera_centers(poses), tj.camera_centers(train)
    # Along the walk from the first to the last camera, swaying at most a fraction of the 0.5 spacing.
    assert centres[:, 1].min() > -0.3 and centres[:, 1].max() < 1.5 + 0.3
    assert (centres[:, 0] - train_centres[:, 0].mean()).abs().max() < 0.5
    assert (centres[:, 0].max() - centres[:, 0].min()) > 0.05  # it does sway sideways
    # Every camera looks roughly down the street, as the training cameras do (turns of a few degrees only).
    assert (tj.forward_axes(poses) @ torch.tensor([0.0, 1.0, 0.0]) > 0.98).all()
    other = tj.walk_trajectory(train, 30, round_index=1, generator=torch.Generator().manual_seed(1), sway=0.25)
    assert not torch.allclose(poses, other)  # the phase is drawn per round


def test_walk_interpolates_orientations_between_turning_cameras():
    eyes = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    up = torch.tensor([0.0, 0.0, 1.0])
    left = tj.look_at(eyes[:1], eyes[:1] + torch.tensor([0.0, 1.0, 0.0]), up)
    right = tj.look_at(eyes[1:], eyes[1:] + torch.tensor([1.0, 1.0, 0.0]), up)
    poses = tj.walk_trajectory(torch.cat([left, right]), 9, 0, torch.Generator().manual_seed(0), sway=0.0,
                               turn_degrees=0.0)
    halfway = torch.tensor([math.sin(math.radians(22.5)), math.cos(math.radians(22.5)), 0.0])
    assert torch.rad2deg(torch.acos((tj.forward_axes(poses)[4] @ halfway).clamp(max=1.0))) < 0.5
    assert torch.allclose(tj.camera_centers(poses)[4], torch.tensor([0.5, 0.0, 1.0]), atol=1e-5)
    assert torch.allclose(poses[0], left[0], atol=1e-5) and torch.allclose(poses[-1], right[0], atol=1e-5)


def test_path_order_keeps_a_walk_and_sorts_unordered_photos():
    walk = walking_cameras(n=6)
    order = tj.path_order(tj.camera_centers(walk))
    assert order.tolist() in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0])
    shuffled = walk[torch.tensor([3, 0, 5, 1, 4, 2])]
    centres = tj.camera_centers(shuffled)[tj.path_order(tj.camera_centers(shuffled))]
    assert ((centres[1:] - centres[:-1]).norm(dim=-1) < 0.35).all()  # neighbours only: no jumps along the street
    a = tj.walk_trajectory(walk, 12, 0, torch.Generator().manual_seed(0))
    b = tj.walk_trajectory(shuffled, 12, 0, torch.Generator().manual_seed(0))
    assert torch.allclose(a, b, atol=1e-5)  # the same walk whatever order the photos came in
