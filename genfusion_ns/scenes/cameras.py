"""Camera paths for the procedural scenes: pinhole intrinsics and OpenCV camera-to-world poses (z-up world)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genfusion_ns.axes import flip_camera_axes

WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class PinholeCameras:
    """``c2w_opencv [V,4,4]`` (x right, y down, z forward) and shared intrinsics."""

    c2w_opencv: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def c2w_opengl(self) -> np.ndarray:
        """nerfstudio's ``transform_matrix`` convention: x right, y up, z back."""
        return flip_camera_axes(self.c2w_opencv)

    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world matrix of a camera at ``eye`` looking at ``target`` with the world z axis up."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def orbit_path(views: int, radius: float, height: float, target: np.ndarray, height_wobble: float,
               phase: float) -> np.ndarray:
    """Full circle around ``target``; the height oscillates a little so views are not coplanar."""
    angles = phase + np.linspace(0.0, 2.0 * np.pi, views, endpoint=False)
    poses = []
    for i, a in enumerate(angles):
        eye = target + np.array([radius * np.cos(a), radius * np.sin(a), 0.0])
        eye[2] = height + height_wobble * np.sin(2.0 * a + 0.7 * i)
        poses.append(look_at(eye, target))
    return np.stack(poses)


def arc_path(views: int, radius: float, height: float, target: np.ndarray, span_degrees: float,
             phase: float) -> np.ndarray:
    """Forward-facing arc (LLFF-like): all cameras on one side of the scene, looking at ``target``."""
    half = np.deg2rad(span_degrees) / 2.0
    angles = phase + np.linspace(-half, half, views)
    poses = []
    for i, a in enumerate(angles):
        eye = target + np.array([radius * np.cos(a), radius * np.sin(a), 0.0])
        eye[2] = height + 0.15 * np.sin(3.0 * i / max(views - 1, 1) * np.pi)
        poses.append(look_at(eye, target))
    return np.stack(poses)


def walk_path(views: int, center: np.ndarray, half_length: float, height: float, direction: np.ndarray,
              phase: float) -> np.ndarray:
    """Walking forward along ``direction`` through ``center`` (a phone capture down a street): the eye drifts a
    little sideways and the view turns a few degrees left and right, looking 6 m ahead and slightly down."""
    direction = direction / np.linalg.norm(direction)
    lateral = np.cross(WORLD_UP, direction)
    poses = []
    for i, s in enumerate(np.linspace(-half_length, half_length, views)):
        eye = center + s * direction + 0.3 * np.sin(phase + 1.3 * i / max(views - 1, 1) * np.pi) * lateral
        eye[2] = height + 0.05 * np.sin(2.1 * i + phase)
        yaw = np.deg2rad(8.0) * np.sin(phase + 2.0 * np.pi * i / max(views - 1, 1))
        ahead = np.cos(yaw) * direction + np.sin(yaw) * lateral
        target = eye + 6.0 * ahead
        target[2] = height - 0.4
        poses.append(look_at(eye, target))
    return np.stack(poses)


def intrinsics_for(width: int, height: int, fov_y_degrees: float) -> tuple[float, float, float, float]:
    """Square pixels, principal point at the image centre (pixel centres at +0.5, as nerfstudio and gsplat)."""
    fy = 0.5 * height / np.tan(np.deg2rad(fov_y_degrees) / 2.0)
    return fy, fy, width / 2.0, height / 2.0
