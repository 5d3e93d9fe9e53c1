"""Seed-point files (``ply_file_path``): read and written with plyfile, without Open3D.

nerfstudio reads a dataset's ``.ply`` with Open3D, a 400 MB wheel that on Debian also needs ``libusb`` at
import and that machines carrying only what a run needs lack (the GPU check's offline machines). Seed points are
vertex positions and optional colours, which plyfile (pure Python) reads from every PLY variant the datasets
use: the ASCII files of ``genfusion-scene`` and nerfstudio's COLMAP converter, and the binary ones the protocols
write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PointCloudError(ValueError):
    """A seed-point file cannot be read; the message names the file and what is wrong."""


@dataclass
class PointCloud:
    """Vertex positions ``[N, 3]`` (float64) and colours ``[N, 3]`` (uint8, None when the file has none)."""

    points: np.ndarray
    colors: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, keep: np.ndarray) -> PointCloud:
        return PointCloud(self.points[keep], None if self.colors is None else self.colors[keep])


def _colors(vertex: np.ndarray) -> np.ndarray | None:
    names = vertex.dtype.names or ()
    if not all(channel in names for channel in ("red", "green", "blue")):
        return None
    rgb = np.stack([vertex[channel] for channel in ("red", "green", "blue")], axis=-1)
    if np.issubdtype(rgb.dtype, np.floating):  # colours stored in [0, 1]
        return np.clip(np.round(rgb.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if rgb.dtype.itemsize > 1:  # 16-bit colours
        return (rgb.astype(np.float64) / np.iinfo(rgb.dtype).max * 255.0).round().astype(np.uint8)
    return rgb.astype(np.uint8)


def read_point_cloud(path: Path) -> PointCloud:
    """The vertices of the PLY file ``path``; a file without vertices gives an empty cloud."""
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise PointCloudError(
            f"the seed-point file {path} is not a readable PLY file ({error}). Write it again (e.g. with "
            "genfusion-process-photos), or remove ply_file_path from transforms.json to start from random points."
        ) from error
    if "vertex" not in [element.name for element in ply.elements]:
        return PointCloud(np.zeros((0, 3)))
    vertex = ply["vertex"].data
    if not all(axis in (vertex.dtype.names or ()) for axis in ("x", "y", "z")):
        raise PointCloudError(f"the seed-point file {path} has vertices without x, y, z coordinates.")
    points = np.stack([vertex[axis] for axis in ("x", "y", "z")], axis=-1).astype(np.float64)
    return PointCloud(points, _colors(vertex))


def write_point_cloud(cloud: PointCloud, path: Path) -> None:
    """Write ``cloud`` to ``path`` as a binary PLY (float64 x, y, z and, if present, uchar colours)."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f8"), ("y", "f8"), ("z", "f8")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(cloud), dtype=fields)
    for index, axis in enumerate(("x", "y", "z")):
        vertex[axis] = cloud.points[:, index]
    if cloud.colors is not None:
        for index, channel in enumerate(("red", "green", "blue")):
            vertex[channel] = cloud.colors[:, index]
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(path))
