"""Seed-point files read and written with plyfile (genfusion_ns/point_clouds.py) instead of Open3D."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genfusion_ns.point_clouds import PointCloud, PointCloudError, read_point_cloud, write_point_cloud

LUND = Path(__file__).parent / "data" / "lund_small"


def test_binary_round_trip_keeps_points_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    cloud = PointCloud(rng.normal(size=(50, 3)), rng.integers(0, 256, size=(50, 3)).astype(np.uint8))
    write_point_cloud(cloud.subset(np.arange(50) % 2 == 0), tmp_path / "half.ply")
    back = read_point_cloud(tmp_path / "half.ply")
    assert np.array_equal(back.points, cloud.points[::2]) and np.array_equal(back.colors, cloud.colors[::2])
    write_point_cloud(PointCloud(cloud.points), tmp_path / "plain.ply")
    assert read_point_cloud(tmp_path / "plain.ply").colors is None


def test_ascii_float_colours_and_damaged_files(tmp_path):
    header = ["ply", "format ascii 1.0", "element vertex 2"] + [
        f"property float {name}" for name in ("x", "y", "z", "red", "green", "blue")] + ["end_header"]
    (tmp_path / "float.ply").write_text("\n".join(header + ["0 1 2 1.0 0.5 0.0", "3 4 5 0.0 0.0 1.0", ""]))
    cloud = read_point_cloud(tmp_path / "float.ply")
    assert np.array_equal(cloud.points, [[0, 1, 2], [3, 4, 5]])
    assert np.array_equal(cloud.colors, [[255, 128, 0], [0, 0, 255]])
    (tmp_path / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend")
    with pytest.raises(PointCloudError, match="broken.ply is not a readable PLY file"):
        read_point_cloud(tmp_path / "broken.ply")


def test_the_dataparser_reads_seed_points_as_nerfstudio_does(tmp_path, monkeypatch):
    from genfusion_ns.model.dataparser import DatasetError, ValidatedNerfstudioDataParserConfig

    def seed_points(data: Path) -> dict:
        parser = ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True).setup()
        return parser.get_dataparser_outputs("train").metadata

    ours = seed_points(LUND)
    assert ours["points3D_xyz"].shape == (1010, 3) and ours["points3D_rgb"].dtype == torch.uint8
    try:
        import open3d  # noqa: F401  (nerfstudio's own reader, where it can be imported)
    except (ImportError, OSError):
        pass
    else:
        from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio

        from genfusion_ns.model.dataparser import ValidatedNerfstudio

        monkeypatch.setattr(ValidatedNerfstudio, "_load_3D_points", Nerfstudio._load_3D_points)
        theirs = seed_points(LUND)
        monkeypatch.undo()
        assert torch.allclose(ours["points3D_xyz"], theirs["points3D_xyz"], atol=1e-6)
        assert int((ours["points3D_rgb"].int() - theirs["points3D_rgb"].int()).abs().max()) <= 1
    # Points without colours start grey; a damaged file is a dataset error that names the file.
    data = tmp_path / "lund"
    shutil.copytree(LUND, data)
    write_point_cloud(PointCloud(read_point_cloud(LUND / "sparse_pc.ply").points), data / "sparse_pc.ply")
    grey = seed_points(data)
    assert torch.equal(grey["points3D_xyz"], ours["points3D_xyz"])
    assert bool((grey["points3D_rgb"] == 128).all())
    (data / "sparse_pc.ply").write_bytes(b"not a ply")
    with pytest.raises(DatasetError, match="sparse_pc.ply is not a readable PLY file"):
        seed_points(data)
