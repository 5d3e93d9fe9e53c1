"""Novel camera trajectories for repair rounds, in nerfstudio's (dataparser-normalised) world frame.

Poses are camera-to-world ``[N,3,4]`` tensors in nerfstudio's OpenGL convention (x right, y up, z back), exactly
what ``Cameras.camera_to_worlds`` holds, so trajectories can be rendered with the training cameras' intrinsics.
The modes follow the authors' outpainters (``genfusion_reconstruction.md`` §5.3-5.6):

* ``sparse``: an ellipse around the training cameras' focus point, whose height swing shrinks and whose pitch
  grows with the round index, so every round shows the model different novel views;
* ``walk``: along the training cameras in capture order, positions and orientations interpolated between them and
  swayed sideways and up by a fraction of their spacing (forward-facing and walking captures, whose optical axes
  do not converge: an ellipse around their "focus point" would look at nothing the views saw);
* ``auto``: ``sparse`` for inward-facing captures, ``walk`` otherwise (:func:`is_inward_facing`);
* ``crop``: the training trajectory itself, rendered full-frame (masked / narrow field-of-view input);
* ``rotation``: an ellipse at the cameras' mean height whose cameras are yawed sideways by an angle (completion);
* ``path``: a camera path saved from the nerfstudio viewer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch


def camera_centers(c2w: torch.Tensor) -> torch.Tensor:
    return c2w[:, :3, 3]


def forward_axes(c2w: torch.Tensor) -> torch.Tensor:
    """Viewing directions (OpenGL cameras look down their -z axis)."""
    return -c2w[:, :3, 2]


def focus_point(c2w: torch.Tensor) -> torch.Tensor:
    """Least-squares point closest to all optical axes: where the capture is looking."""
    origins, dirs = camera_centers(c2w).double(), torch.nn.functional.normalize(forward_axes(c2w).double(), dim=-1)
    projector = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]
    lhs, rhs = projector.sum(0), (projector @ origins[:, :, None]).sum(0)[:, 0]
    if torch.linalg.matrix_rank(lhs) < 3:  # all axes parallel: fall back to a point ahead of the cameras
        return (origins.mean(0) + dirs.mean(0)).to(c2w.dtype)
    return torch.linalg.solve(lhs, rhs).to(c2w.dtype)


def dominant_up(c2w: torch.Tensor) -> torch.Tensor:
    """The world axis (with sign) closest to the cameras' mean up vector."""
    mean_up = c2w[:, :3, 1].mean(0)
    axis = int(mean_up.abs().argmax())
    up = torch.zeros(3, dtype=c2w.dtype)
    up[axis] = torch.sign(mean_up[axis]) if mean_up[axis] != 0 else 1.0
    return up


def look_at(eyes: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """OpenGL camera-to-world poses ``[N,3,4]`` at ``eyes`` looking at ``target``."""
    back = torch.nn.functional.normalize(eyes - target, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(up.expand_as(back), back, dim=-1), dim=-1)
    true_up = torch.cross(back, right, dim=-1)
    return torch.cat([torch.stack([right, true_up, back], dim=-1), eyes[:, :, None]], dim=-1)


def rotate_about_local_axis(c2w: torch.Tensor, axis: int, degrees: float) -> torch.Tensor:
    """Right-multiply each rotation by a rotation about the camera's own x (pitch) or y (yaw) axis."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    if axis == 0:
        local = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=c2w.dtype)
    elif axis == 1:
        local = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=c2w.dtype)
    else:
        raise ValueError(f"axis must be 0 (x) or 1 (y), got {axis}")
    out = c2w.clone()
    out[:, :3, :3] = c2w[:, :3, :3] @ local
    return out


@dataclass
class _Ellipse:
    """A ring of camera positions around the capture's focus point, in the plane normal to its up axis."""

    center: torch.Tensor  # focus point the cameras look at
    up: torch.Tensor  # dominant world up axis (with sign)
    up_axis: int
    theta: torch.Tensor  # [F] angles, one revolution
    eyes: torch.Tensor  # [F,3] positions; the up coordinate is left at 0 for the caller


def _ellipse(train_c2w: torch.Tensor, num_frames: int, scale: float) -> _Ellipse:
    """Ring spanning ``scale`` × the training cameras' 90th-percentile extent about the focus point (flattened onto
    the ground plane), as both of the authors' ellipse paths build it."""
    center, up = focus_point(train_c2w), dominant_up(train_c2w)
    up_axis = int(up.abs().argmax())
    plane_axes = [a for a in range(3) if a != up_axis]
    offset = center.clone()
    offset[up_axis] = 0.0
    extent = torch.quantile((camera_centers(train_c2w) - offset).abs(), 0.9, dim=0)
    low, high = (offset - extent) * scale, (offset + extent) * scale
    theta = torch.linspace(0.0, 2.0 * math.pi, num_frames + 1, dtype=train_c2w.dtype)[:-1]
    eyes = torch.zeros(num_frames, 3, dtype=train_c2w.dtype)
    for axis, wave in zip(plane_axes, (torch.cos(theta), torch.sin(theta))):
        eyes[:, axis] = low[axis] + (high - low)[axis] * (wave / 2 + 0.5)
    return _Ellipse(center, up, up_axis, theta, eyes)


def sparse_ellipse(train_c2w: torch.Tensor, num_frames: int, round_index: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The authors' sparse-view path for round ``round_index`` (reference §5.4), about the dominant up axis.

    The ellipse spans 1.2× the 90th-percentile extent of the training cameras around the focus point; the
    height oscillates between the 10th and 90th percentile camera heights scaled by
    ``max(1.5 - 0.2 i, 0.5)`` with a random phase, and every camera is pitched by ``2 i`` degrees.
    Unlike the authors (who assume z is up after their PCA), the height axis is the cameras' dominant up axis.
    """
    ring = _ellipse(train_c2w, num_frames, scale=1.2)
    heights = camera_centers(train_c2w)[:, ring.up_axis]
    z10, z90 = torch.quantile(heights, 0.1), torch.quantile(heights, 0.9)
    z_variation = max(1.5 - 0.2 * round_index, 0.5)
    z_phase = float(torch.rand((), generator=generator))
    swing = z10 + (z90 - z10) * (torch.cos(ring.theta + 2.0 * math.pi * z_phase) / 2 + 0.5)
    # The authors scale absolute heights (their scenes are centred on the ground); scale about the mean instead so
    # a capture whose cameras sit far from height 0 is not pushed out of the scene.
    mean_height = heights.mean()
    ring.eyes[:, ring.up_axis] = mean_height + z_variation * (swing - mean_height)
    poses = look_at(ring.eyes, ring.center, ring.up)
    # Pitch about the camera x axis: the same physical rotation in OpenCV and OpenGL axes.
    return rotate_about_local_axis(poses, axis=0, degrees=2.0 * round_index)


def crop_trajectory(train_c2w: torch.Tensor) -> torch.Tensor:
    """Masked-input mode: the training poses themselves, in order (rendered full-frame by the caller)."""
    return train_c2w.clone()


def rotation_trajectory(train_c2w: torch.Tensor, num_frames: int, angle_degrees: float = 90.0,
                        distance: float = 0.0, height_offset: float = 0.0) -> torch.Tensor:
    """Scene-completion path (reference §5.6 b): an ellipse at the cameras' mean height around the focus point,
    pushed ``distance`` away from it, then yawed by ``angle_degrees`` so the cameras look into unseen space."""
    ring = _ellipse(train_c2w, num_frames, scale=1.0)
    ring.eyes[:, ring.up_axis] = camera_centers(train_c2w)[:, ring.up_axis].mean() + height_offset
    eyes = ring.eyes + distance * torch.nn.functional.normalize(ring.eyes - ring.center, dim=-1)
    poses = look_at(eyes, ring.center, ring.up)
    # The authors yaw about the OpenCV y axis (pointing down); OpenGL's y points up, hence the sign.
    return rotate_about_local_axis(poses, axis=1, degrees=-angle_degrees)


def is_inward_facing(c2w: torch.Tensor, min_spread_degrees: float = 30.0) -> bool:
    """True when the cameras look at a common region from around it: their viewing directions spread by more than
    ``min_spread_degrees`` (mean angle to the mean direction) and the focus point lies in front of at least 80 % of
    them. Forward-facing and walking captures (near-parallel axes) are not."""
    if c2w.shape[0] < 2:
        return False
    dirs = torch.nn.functional.normalize(forward_axes(c2w).double(), dim=-1)
    mean_dir = torch.nn.functional.normalize(dirs.mean(0), dim=0) if dirs.mean(0).norm() > 1e-6 else None
    spread = 180.0 if mean_dir is None else float(torch.rad2deg(torch.acos((dirs @ mean_dir).clamp(-1, 1))).mean())
    if spread < min_spread_degrees:
        return False
    to_focus = focus_point(c2w).double() - camera_centers(c2w).double()
    return float(((to_focus * dirs).sum(-1) > 0).double().mean()) >= 0.8


def _slerp_rotations(rotations: torch.Tensor, knots: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[K,3,3]`` (K >= 2) given at increasing ``knots`` ``[K]`` -> slerped at ``at`` ``[N]``."""
    from scipy.spatial.transform import Rotation, Slerp

    slerp = Slerp(knots.double().numpy(), Rotation.from_matrix(rotations.double().numpy()))
    return torch.from_numpy(slerp(at.double().clamp(knots[0], knots[-1]).numpy()).as_matrix()).to(rotations.dtype)


def path_order(centres: torch.Tensor) -> torch.Tensor:
    """Indices visiting the cameras as one path: from the camera farthest from their mean, always on to the
    nearest camera not visited yet. A sequential capture keeps its order; unordered photos become a walk."""
    count = centres.shape[0]
    if count < 3:
        return torch.arange(count)
    distances = torch.cdist(centres.double(), centres.double())
    order = [int((centres.double() - centres.double().mean(0)).norm(dim=-1).argmax())]
    visited = torch.zeros(count, dtype=torch.bool)
    visited[order[0]] = True
    for _ in range(count - 1):
        candidates = torch.where(visited, torch.full_like(distances[order[-1]], float("inf")), distances[order[-1]])
        order.append(int(candidates.argmin()))
        visited[order[-1]] = True
    return torch.tensor(order)


def walk_trajectory(train_c2w: torch.Tensor, num_frames: int, round_index: int,
                    generator: torch.Generator | None = None, sway: float = 0.0,
                    turn_degrees: float = 6.0) -> torch.Tensor:
    """Cameras moving along the training cameras (a polyline through their centres in :func:`path_order`, sampled
    evenly by arc length), each oriented by slerping the two training cameras it lies between, so it looks at what they
    see; then swayed along its own right / up axes by up to ``sway`` x the median spacing of neighbouring training
    cameras (none by default) and turned by up to ``turn_degrees`` (yaw) and half that (pitch), with a random phase per round and a
    sway that grows slightly with the round index. A single training camera gets a small loop around itself."""
    train_c2w = train_c2w[path_order(camera_centers(train_c2w))]
    centres = camera_centers(train_c2w).double()
    steps = (centres[1:] - centres[:-1]).norm(dim=-1)
    spacing = float(steps.median()) if len(steps) else 0.0
    if spacing <= 1e-9:
        spacing = 0.05 * max(float(centres.norm(dim=-1).max()), 1.0)
    knots = torch.cat([torch.zeros(1, dtype=torch.float64), steps.cumsum(0)])
    at = torch.linspace(0.0, float(knots[-1]), num_frames, dtype=torch.float64)
    if bool((steps > 1e-9).any()):  # at least two distinct positions: a path to walk
        unique = torch.cat([torch.ones(1, dtype=torch.bool), steps > 1e-9])  # drop repeated positions
        knots_u, centres_u, rotations_u = knots[unique], centres[unique], train_c2w[unique, :3, :3].double()
        index = torch.searchsorted(knots_u, at, right=True).clamp(1, len(knots_u) - 1)
        low, high = knots_u[index - 1], knots_u[index]
        weight = ((at - low) / (high - low).clamp_min(1e-12))[:, None]
        eyes = centres_u[index - 1] * (1 - weight) + centres_u[index] * weight
        rotations = _slerp_rotations(rotations_u, knots_u, at)
    else:
        eyes = centres[:1].expand(num_frames, 3).clone()
        rotations = train_c2w[:1, :3, :3].double().expand(num_frames, 3, 3).clone()
    phase = 2.0 * math.pi * float(torch.rand((), generator=generator))
    wave = torch.linspace(0.0, 2.0 * math.pi, num_frames, dtype=torch.float64) + phase
    amplitude = sway * spacing * (1.0 + 0.25 * min(round_index, 4))
    right, up = rotations[:, :, 0], rotations[:, :, 1]
    eyes = eyes + amplitude * (torch.sin(wave)[:, None] * right + 0.5 * torch.cos(2.0 * wave)[:, None] * up)
    poses = torch.cat([rotations, eyes[:, :, None]], dim=-1).to(train_c2w.dtype)
    yaw, pitch = turn_degrees * torch.sin(wave + 0.5 * math.pi), 0.5 * turn_degrees * torch.sin(2.0 * wave)
    out = torch.stack([rotate_about_local_axis(poses[i : i + 1], 1, float(yaw[i]))[0] for i in range(num_frames)])
    return torch.stack([rotate_about_local_axis(out[i : i + 1], 0, float(pitch[i]))[0] for i in range(num_frames)])


def load_viewer_camera_path(path: str | Path, num_frames: int | None = None) -> torch.Tensor:
    """Poses from a camera-path JSON saved by the nerfstudio viewer (``camera_path[i].camera_to_world``: 16
    row-major floats, OpenGL, nerfstudio world frame), evenly subsampled to ``num_frames`` if given."""
    try:
        data = json.loads(Path(path).read_text())
        matrices = [entry["camera_to_world"] for entry in data["camera_path"]]
    except FileNotFoundError as error:
        raise FileNotFoundError(f"camera path file {path} does not exist; save one from the nerfstudio viewer's "
                                "Render tab ('Generate command' writes camera_paths/*.json).") from error
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a nerfstudio viewer camera path: expected JSON with a 'camera_path' list of "
                         "entries holding 16-number 'camera_to_world' matrices.") from error
    if not matrices:
        raise ValueError(f"camera path {path} has no poses; add keyframes in the viewer's Render tab and save it again.")
    try:
        poses = torch.tensor(matrices, dtype=torch.float32).reshape(-1, 4, 4)[:, :3, :]
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: every 'camera_to_world' must be 16 numbers ({error}).") from None
    if len(poses) != len(matrices) or not torch.isfinite(poses).all():
        raise ValueError(f"{path}: every 'camera_to_world' must be 16 finite numbers.")
    if num_frames is not None and num_frames < len(poses):
        poses = poses[torch.linspace(0, len(poses) - 1, num_frames).round().long()]
    return poses


def nearest_training_view(clip_c2w: torch.Tensor, train_c2w: torch.Tensor) -> int:
    """Reference frame for CLIP conditioning (authors' rule, §5.4): the training camera closest to the clip's mean
    position, with half weight on the disagreement between its viewing direction and the clip's mean direction."""
    mean_position = camera_centers(clip_c2w).mean(0)
    mean_forward = torch.nn.functional.normalize(forward_axes(clip_c2w).mean(0), dim=0)
    distance = (camera_centers(train_c2w) - mean_position).norm(dim=-1)
    alignment = torch.nn.functional.normalize(forward_axes(train_c2w), dim=-1) @ mean_forward
    return int(torch.argmin(distance + 0.5 * (1.0 - alignment)))
