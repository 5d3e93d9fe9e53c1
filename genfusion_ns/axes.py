"""Camera axes: nerfstudio's OpenGL convention (x right, y up, looking down -z) versus OpenCV's (x right, y down,
looking down +z), which the rasterizer, the scene generator and viser use. One flip, in one place."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Matrix = TypeVar("Matrix", np.ndarray, torch.Tensor)


def flip_camera_axes(camera_to_world: Matrix) -> Matrix:
    """The same camera with its y and z axes negated: OpenGL <-> OpenCV (the flip is its own inverse).

    Takes ``[..., 3, 3]`` rotations or ``[..., 3|4, 4]`` camera-to-world matrices (numpy or torch); returns a new
    array, the input is left untouched.
    """
    flipped = camera_to_world.clone() if isinstance(camera_to_world, torch.Tensor) else np.array(camera_to_world)
    flipped[..., :3, 1:3] *= -1
    return flipped
