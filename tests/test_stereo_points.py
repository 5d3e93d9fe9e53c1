"""Seed points where the training views agree (datasets without a point cloud)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from genfusion_ns.axes import flip_camera_axes
from genfusion_ns.model.dataparser import ValidatedNerfstudioDataParserConfig
from genfusion_ns.model.stereo_points import plane_sweep_points

LUND = Path(__file__).parent / "data" / "lund_small"


def _texture(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A smooth, non-repeating colour pattern on the plane."""
    return torch.stack([0.5 + 0.4 * torch.sin(7.1 * x + 2.3 * y), 0.5 + 0.4 * torch.sin(5.3 * y - 3.7 * x),
                        0.5 + 0.4 * torch.sin(4.1 * x * y + 1.9 * x)], dim=-1)


def _plane_views(xs: list[float], depth: float = 2.0, size: int = 48) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Cameras at x = xs looking down +z (OpenCV) at a textured plane z = depth, as exact images."""
    f, c = size * 0.9, (size - 1) / 2
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                          indexing="ij")
    images, poses = [], []
    for x in xs:
        images.append(_texture((u - c) / f * depth + x, (v - c) / f * depth))
        opencv = torch.eye(4)[:3]
        opencv[0, 3] = x
        poses.append(flip_camera_axes(opencv))
    return images, torch.stack(poses)


def test_points_of_a_textured_plane_lie_on_it():
    images, c2w = _plane_views([0.0, 0.4, 0.8])
    size = images[0].shape[0]
    intrinsics = torch.tensor([[size * 0.9, size * 0.9, (size - 1) / 2, (size - 1) / 2]]).expand(3, 4)
    xyz, rgb = plane_sweep_points(images, c2w, intrinsics)
    assert len(xyz) > 200 and rgb.dtype == torch.uint8 and rgb.shape == xyz.shape
    assert (xyz[:, 2] - 2.0).abs().median() < 0.05  # the world z of the plane
    assert ((xyz[:, 2] - 2.0).abs() < 0.2).float().mean() > 0.9


def test_a_textureless_capture_gives_no_points():
    images, c2w = _plane_views([0.0, 0.4, 0.8])
    flat = [torch.full_like(image, 0.5) for image in images]
    intrinsics = torch.tensor([[43.2, 43.2, 23.5, 23.5]]).expand(3, 4)
    xyz, _ = plane_sweep_points(flat, c2w, intrinsics)
    assert len(xyz) == 0
    single, _ = plane_sweep_points(images[:1], c2w[:1], intrinsics[:1])
    assert len(single) == 0


def _lund_without_points(tmp_path: Path) -> Path:
    data = tmp_path / "lund"
    shutil.copytree(LUND / "images", data / "images")
    meta = json.loads((LUND / "transforms.json").read_text())
    meta.pop("ply_file_path")
    (data / "transforms.json").write_text(json.dumps(meta))
    return data


def test_real_capture_without_a_point_cloud_is_seeded_where_sfm_found_the_scene(tmp_path):
    data = _lund_without_points(tmp_path)
    outputs = ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True).setup().get_dataparser_outputs()
    stereo = outputs.metadata["points3D_xyz"].float()
    assert outputs.metadata["points3D_rgb"].dtype == torch.uint8 and len(stereo) > 500
    sfm_outputs = ValidatedNerfstudioDataParserConfig(data=LUND, load_3D_points=True).setup().get_dataparser_outputs()
    sfm = sfm_outputs.metadata["points3D_xyz"].float()
    assert torch.allclose(outputs.cameras.camera_to_worlds, sfm_outputs.cameras.camera_to_worlds)
    centres = outputs.cameras.camera_to_worlds[:, :3, 3]
    extent = float((centres - centres.mean(0)).norm(dim=-1).max())
    distance = torch.cdist(stereo, sfm).min(1).values / extent
    assert float(distance.median()) < 0.2 and float(torch.quantile(distance, 0.75)) < 0.4
    off = ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True, points_without_ply="none")
    assert "points3D_xyz" not in off.setup().get_dataparser_outputs().metadata


@pytest.mark.parametrize("split", ["val", "test"])
def test_only_the_training_split_is_triangulated(tmp_path, split):
    data = _lund_without_points(tmp_path)
    parser = ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True).setup()
    assert "points3D_xyz" not in parser.get_dataparser_outputs(split).metadata
