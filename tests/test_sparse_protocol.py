"""The sparse-view protocol: split files, untouched source, point filtering (frustum, occlusion, held-out-only
points), the all-views flag, clear errors, and a dataset nerfstudio parses."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from genfusion_ns.protocols.sparse_views import (
    PROTOCOL_FILE,
    SparseProtocolConfig,
    SparseProtocolError,
    make_sparse_dataset,
)
from genfusion_ns.scenes.dataset import write_ply, write_png_depth

SIZE, FOCAL = 16, 16.0
FRONT_OF_TRAIN = (0.0, 0.0, -1.0)  # 1 m in front of the training camera
ON_WALL = (0.1, 0.0, -2.0)  # on the training view's surface (depth 2 m)
BEHIND_WALL = (0.0, 0.0, -3.0)  # inside the training frustum but hidden by the surface
OUTSIDE_FRUSTUM = (5.0, 0.0, -1.0)
FRONT_OF_HELD_OUT = (0.0, 0.0, 1.0)  # behind the training camera, in front of the held-out one
POINTS = np.array([FRONT_OF_TRAIN, ON_WALL, BEHIND_WALL, OUTSIDE_FRUSTUM, FRONT_OF_HELD_OUT])


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _kept_points(folder):
    from genfusion_ns.point_clouds import read_point_cloud

    meta = json.loads((folder / "transforms.json").read_text())
    return read_point_cloud(folder / meta["ply_file_path"]).points


def _two_camera_dataset(root, with_depth=True, camera_model="OPENCV"):
    """Camera 0 looks down -z at a surface 2 m away; camera 1 sits at the same place looking the other way."""
    (root / "images").mkdir(parents=True)
    (root / "depths").mkdir()
    poses = [np.eye(4), np.diag([-1.0, 1.0, -1.0, 1.0])]  # OpenGL camera-to-world; the second is turned around
    frames = []
    for i, pose in enumerate(poses):
        name = f"frame_{i:05d}.png"
        Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(root / "images" / name)
        frame = {"file_path": f"images/{name}", "transform_matrix": pose.tolist()}
        if with_depth:
            write_png_depth(root / "depths" / name, np.full((SIZE, SIZE), 2.0))
            frame["depth_file_path"] = f"depths/{name}"
        frames.append(frame)
    write_ply(root / "points.ply", POINTS, np.full((len(POINTS), 3), 200, np.uint8))
    meta = {"camera_model": camera_model, "fl_x": FOCAL, "fl_y": FOCAL, "cx": SIZE / 2, "cy": SIZE / 2,
            "w": SIZE, "h": SIZE, "ply_file_path": "points.ply", "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    (root / "train_test_split_1.json").write_text(json.dumps({"train_ids": [0], "test_ids": [1]}))
    return root


def _as_set(points):
    return {tuple(np.round(p, 3)) for p in points}


def test_filtering_keeps_only_points_the_training_view_sees(tmp_path):
    source = _two_camera_dataset(tmp_path / "src")
    before = _snapshot(source)
    summary = make_sparse_dataset(SparseProtocolConfig(source=source, output=tmp_path / "out",
                                                       split_file=source / "train_test_split_1.json"))
    assert _snapshot(source) == before  # the source is only read
    # Held-out-only, outside-the-frustum and occluded points are removed; visible ones stay.
    assert _as_set(_kept_points(tmp_path / "out")) == _as_set([FRONT_OF_TRAIN, ON_WALL])
    assert summary.depth_tested and not summary.points_from_all_views
    assert (summary.num_source_points, summary.num_points) == (5, 2)
    record = json.loads((tmp_path / "out" / PROTOCOL_FILE).read_text())
    assert record["points"]["visibility_test"] == "frustum+depth"
    assert record["split"]["train_ids"] == [0] and record["split"]["test_ids"] == [1]


def test_without_depth_only_the_frustum_test_runs_and_says_so(tmp_path):
    source = _two_camera_dataset(tmp_path / "src", with_depth=False)
    with pytest.warns(UserWarning, match="frustum test only"):
        summary = make_sparse_dataset(SparseProtocolConfig(source=source, output=tmp_path / "out",
                                                           split_file=source / "train_test_split_1.json"))
    # The occluded point cannot be told apart without depth; the held-out-only and off-frustum ones still go.
    assert _as_set(_kept_points(tmp_path / "out")) == _as_set([FRONT_OF_TRAIN, ON_WALL, BEHIND_WALL])
    assert not summary.depth_tested and not summary.points_from_all_views
    record = json.loads((tmp_path / "out" / PROTOCOL_FILE).read_text())
    assert record["points"]["visibility_test"] == "frustum" and record["depth_tested"] is False


@pytest.mark.parametrize("case", ["disabled", "fisheye"])
def test_unrestricted_points_are_flagged_as_coming_from_all_views(tmp_path, case):
    source = _two_camera_dataset(tmp_path / "src", camera_model="OPENCV_FISHEYE" if case == "fisheye" else "OPENCV")
    config = SparseProtocolConfig(source=source, output=tmp_path / "out", train_views=1,
                                  filter_points=case != "disabled")
    with pytest.warns(UserWarning, match="came from all views"):
        summary = make_sparse_dataset(config)
    assert summary.points_from_all_views and summary.num_points == 5
    record = json.loads((tmp_path / "out" / PROTOCOL_FILE).read_text())
    assert record["points_from_all_views"] is True and record["points"]["ply_file_path"] == "points.ply"


def test_generated_scene_split_file_and_nerfstudio_parses_it(tiny_dense_scene, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    split = tmp_path / "train_test_split_3.json"
    split.write_text(json.dumps({"train_ids": [0, 5, 10], "test_ids": [1, 2, 3, 12]}))
    before = _snapshot(tiny_dense_scene)
    summary = make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tmp_path / "sparse",
                                                       split_file=split))
    assert _snapshot(tiny_dense_scene) == before
    assert summary.train_files == [f"images/frame_{i:05d}.png" for i in (0, 5, 10)]
    assert summary.test_files == [f"images/frame_{i:05d}.png" for i in (1, 2, 3, 12)]
    meta = json.loads((tmp_path / "sparse" / "transforms.json").read_text())
    assert meta["val_filenames"] == meta["test_filenames"] == summary.test_files
    assert 0 < summary.num_points < summary.num_source_points  # the dense cloud is cut down to three views

    # Frustum-only keeps a superset of the depth-tested points.
    loose = make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tmp_path / "loose",
                                                     split_file=split, depth_tolerance=1e9))
    assert _as_set(_kept_points(tmp_path / "sparse")) <= _as_set(_kept_points(tmp_path / "loose"))
    assert loose.num_points > summary.num_points

    parser = NerfstudioDataParserConfig(data=tmp_path / "sparse", load_3D_points=True).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert [p.name for p in train.image_filenames] == ["frame_00000.png", "frame_00005.png", "frame_00010.png"]
    assert len(test.image_filenames) == 4 and len(train.metadata["depth_filenames"]) == 3
    assert train.metadata["points3D_xyz"].shape[0] == summary.num_points


def test_nerfstudio_split_lists_and_evenly_spaced_views(tiny_dense_scene, tmp_path):
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps({"train_filenames": ["images/frame_00004.png", "./images/frame_00009.png"],
                                 "test_filenames": ["images/frame_00000.png"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # depth is present, nothing to warn about
        summary = make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tmp_path / "a",
                                                           split_file=lists))
    assert summary.train_files == ["images/frame_00004.png", "images/frame_00009.png"]
    even = make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tmp_path / "b", train_views=4))
    assert len(even.train_files) == 4 and len(even.test_files) == 12


@pytest.mark.parametrize("content, message", [
    ({"train_ids": [0, 99], "test_ids": [1]}, "outside 0..15"),
    ({"train_ids": [0, 1], "test_ids": [1, 2]}, "both training and held-out"),
    ({"train": [0]}, "needs 'train_ids'"),
    ({"train_filenames": ["images/nope.png"], "test_filenames": ["images/frame_00001.png"]}, "not frames"),
])
def test_bad_splits_fail_clearly_and_write_nothing(tiny_dense_scene, tmp_path, content, message):
    split = tmp_path / "split.json"
    split.write_text(json.dumps(content))
    with pytest.raises(SparseProtocolError, match=message):
        make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tmp_path / "out", split_file=split))
    assert not (tmp_path / "out").exists()


def test_existing_output_is_never_overwritten_silently(tiny_dense_scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(SparseProtocolError, match="--overwrite"):
        make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=out, train_views=3))
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(SparseProtocolError, match="inside"):
        make_sparse_dataset(SparseProtocolConfig(source=tiny_dense_scene, output=tiny_dense_scene / "x",
                                                 train_views=3))


def test_cli_writes_the_dataset(tiny_dense_scene, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "genfusion_ns.protocols.sparse_views", str(tiny_dense_scene),
                           "--output", str(out), "--train-views", "3"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 training views, 13 held-out views" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "genfusion_ns.protocols.sparse_views", str(tiny_dense_scene),
                          "--output", str(out), "--train-views", "3"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--overwrite" in bad.stderr
