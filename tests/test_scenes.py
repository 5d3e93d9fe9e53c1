"""The procedural scene generator writes datasets that nerfstudio's own dataparser reads with the right content."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genfusion_ns.scenes import SceneConfigError, generate_scene
from genfusion_ns.scenes.dataset import split_indices


def parse(scene: Path, split: str):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    return NerfstudioDataParserConfig(data=scene, load_3D_points=True).setup().get_dataparser_outputs(split)


def test_sparse_split_loads_through_nerfstudio(tiny_scene):
    train, test = parse(tiny_scene, "train"), parse(tiny_scene, "test")
    assert len(train.image_filenames) == 3
    assert len(test.image_filenames) == 9
    assert not set(map(str, train.image_filenames)) & set(map(str, test.image_filenames))
    cams = train.cameras
    meta = json.loads((tiny_scene / "transforms.json").read_text())
    assert int(cams.width[0]) == 32 and int(cams.height[0]) == 32
    assert float(cams.fx[0]) == pytest.approx(meta["fl_x"]) and float(cams.cy[0]) == pytest.approx(16.0)
    assert train.metadata["depth_unit_scale_factor"] == pytest.approx(1e-3)
    assert len(train.metadata["depth_filenames"]) == 3
    points = train.metadata["points3D_xyz"]
    assert points.shape[0] > 100 and points.shape[1] == 3
    split = json.loads((tiny_scene / "train_test_split_3.json").read_text())
    assert split == {"train_ids": [0, 4, 8], "test_ids": [1, 2, 3, 5, 6, 7, 9, 10, 11]}


def test_depth_and_points_agree_with_nerfstudio_cameras(tmp_path):
    """Noise-free seed points projected with nerfstudio's parsed cameras land on the depth maps nerfstudio loads.

    Fails if the pose convention (OpenGL vs OpenCV), the depth unit or the point frame is wrong.
    """
    from nerfstudio.data.utils.data_utils import get_depth_image_from_path

    scene = generate_scene(tmp_path / "s", seed=3, views=8, train_views=2, resolution=40, point_noise=0.0).out
    out = parse(scene, "train")
    points = out.metadata["points3D_xyz"].double()
    scale = out.dataparser_scale * out.metadata["depth_unit_scale_factor"]
    checked = 0
    for i in range(len(out.image_filenames)):
        c2w = out.cameras.camera_to_worlds[i].double()  # [3,4], OpenGL axes
        cam = (points - c2w[:, 3]) @ c2w[:, :3]  # world -> camera (OpenGL)
        z = -cam[:, 2]
        in_front = z > 1e-3
        u = out.cameras.fx[i, 0] * cam[:, 0] / z + out.cameras.cx[i, 0]
        v = -out.cameras.fy[i, 0] * cam[:, 1] / z + out.cameras.cy[i, 0]
        inside = in_front & (u >= 0) & (u < 40) & (v >= 0) & (v < 40)
        depth = get_depth_image_from_path(out.metadata["depth_filenames"][i], 40, 40, scale)[..., 0].double()
        d = depth[v[inside].long(), u[inside].long()]
        # Each point is either on the visible surface (equal depth) or behind it (occluded), never in front.
        rel = (z[inside] - d) / d
        assert (rel > -0.08).float().mean() > 0.97
        assert (rel.abs() < 0.08).float().mean() > 0.4
        checked += int(inside.sum())
    assert checked > 200


def test_every_view_is_rendered_with_valid_depth(tiny_dense_scene):
    meta = json.loads((tiny_dense_scene / "transforms.json").read_text())
    assert len(meta["frames"]) == 16
    assert meta["test_filenames"] == ["images/frame_00000.png", "images/frame_00008.png"]
    for frame in meta["frames"]:
        rgb = np.asarray(Image.open(tiny_dense_scene / frame["file_path"]))
        depth = np.asarray(Image.open(tiny_dense_scene / frame["depth_file_path"]))
        assert rgb.shape == (32, 32, 3) and rgb.std() > 10  # textured, not a flat colour
        assert depth.dtype == np.uint16 and depth.min() > 0  # closed room: every pixel sees a surface


def test_object_scene_and_arc_path(tmp_path):
    summary = generate_scene(tmp_path / "obj", seed=5, views=10, train_views=6, resolution=24, aspect=1.5,
                             kind="object", path="arc")
    assert summary.train_indices == [0, 2, 3, 5, 7, 8] and len(summary.test_indices) == 4
    image = Image.open(summary.out / "images" / "frame_00000.png")
    assert image.size == (36, 24)


def test_same_seed_same_bytes_other_seed_other_scene(tmp_path):
    files = ["transforms.json", "sparse_points.ply", "images/frame_00003.png", "depths/frame_00003.png"]
    a = generate_scene(tmp_path / "a", seed=11, views=6, train_views=3, resolution=16).out
    b = generate_scene(tmp_path / "b", seed=11, views=6, train_views=3, resolution=16).out
    c = generate_scene(tmp_path / "c", seed=12, views=6, train_views=3, resolution=16).out
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "images/frame_00003.png").read_bytes() != (c / "images/frame_00003.png").read_bytes()


def test_split_indices():
    assert split_indices(24, 3) == ([0, 8, 16], [i for i in range(24) if i not in (0, 8, 16)])
    train, test = split_indices(24, "all")
    assert test == [0, 8, 16] and len(train) == 21


def test_refuses_to_overwrite_an_existing_dataset(tmp_path):
    out = tmp_path / "scene"
    generate_scene(out, seed=1, views=4, train_views=2, resolution=8)
    marker = out / "my_notes.txt"
    marker.write_text("keep me")
    with pytest.raises(SceneConfigError, match="--overwrite"):
        generate_scene(out, seed=2, views=4, train_views=2, resolution=8)
    assert marker.read_text() == "keep me"
    generate_scene(out, seed=2, views=4, train_views=2, resolution=8, overwrite=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-views", "0"], "--train-views must be at least 1"),
        (["--views", "6", "--train-views", "6"], "must be smaller than --views"),
        (["--resolution", "-5"], "--resolution must be between"),
        (["--out", "{file}/sub"], "is not writable"),
    ],
)
def test_cli_bad_options_give_one_line_error(tmp_path, args, message):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = [a.replace("{file}", str(blocker)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-m", "genfusion_ns.scenes.cli", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "cli_scene"
    result = subprocess.run(
        [sys.executable, "-m", "genfusion_ns.scenes.cli", "--out", str(out), "--seed", "1", "--views", "6",
         "--train-views", "3", "--resolution", "16"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(json.loads((out / "transforms.json").read_text())["train_filenames"]) == 3


def test_scene_views_rerender_the_dataset_from_its_own_cameras(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from genfusion_ns.scenes import generate_scene, render_scene_views

    generate_scene(tmp_path / "s", seed=4, views=4, train_views=2, resolution=24)
    meta = json.loads((tmp_path / "s" / "transforms.json").read_text())
    frames = meta["frames"][1:3]
    n = len(frames)
    rgb, depth = render_scene_views(tmp_path / "s", np.array([f["transform_matrix"] for f in frames]),
                                    [meta["fl_x"]] * n, [meta["fl_y"]] * n, [meta["cx"]] * n, [meta["cy"]] * n,
                                    meta["w"], meta["h"])
    for i, frame in enumerate(frames):
        image = np.asarray(Image.open(tmp_path / "s" / frame["file_path"])).astype(np.float64) / 255.0
        assert np.abs(image - rgb[i]).max() < 2.5 / 255.0
        stored = np.asarray(Image.open(tmp_path / "s" / frame["depth_file_path"])).astype(np.float64) / 1000.0
        assert np.abs(stored - depth[i]).max() < 2e-3
    shifted = np.array([frames[0]["transform_matrix"]])
    shifted[0, 0, 3] += 0.3  # a new camera: a different picture of the same scene
    other, _ = render_scene_views(tmp_path / "s", shifted, [meta["fl_x"]], [meta["fl_y"]], [meta["cx"]],
                                  [meta["cy"]], meta["w"], meta["h"])
    assert np.abs(other[0] - rgb[0]).mean() > 0.01


def test_photo_textured_street_walks_forward_and_rerenders_exactly(tmp_path):
    import json

    from genfusion_ns.scenes import render_scene_views

    street = generate_scene(tmp_path / "street", seed=3, views=6, train_views=3, resolution=18, aspect=4 / 3,
                            kind="street", textures="photo").out
    meta = json.loads((street / "transforms.json").read_text())
    poses = np.array([f["transform_matrix"] for f in meta["frames"]])
    steps = np.diff(poses[:, :3, 3], axis=0)
    forward = -poses[:-1, :3, 2]  # OpenGL cameras look down their -z axis
    assert (np.sum(steps * forward, axis=1) > 0).all()  # every step moves the camera forward, the way it looks
    images = [np.asarray(Image.open(street / f["file_path"])) for f in meta["frames"]]
    assert images[0].shape == (18, 24, 3) and images[0].std() > 10
    settings = json.loads((street / "scene.json").read_text())
    assert settings["kind"] == "street" and settings["textures"] == "photo"
    n = 1
    rgb, _ = render_scene_views(street, poses[2:3], [meta["fl_x"]] * n, [meta["fl_y"]] * n, [meta["cx"]] * n,
                                [meta["cy"]] * n, meta["w"], meta["h"])
    assert np.abs(np.round(rgb[0] * 255) - images[2]).max() <= 1


def test_photo_textures_change_the_surfaces(tmp_path):
    procedural = generate_scene(tmp_path / "p", seed=21, views=4, train_views=2, resolution=16).out
    photo = generate_scene(tmp_path / "f", seed=21, views=4, train_views=2, resolution=16, textures="photo").out
    rgb_p, rgb_f = (np.asarray(Image.open(s / "images/frame_00001.png")).astype(float) for s in (procedural, photo))
    assert np.abs(rgb_p - rgb_f).mean() > 5


def test_photo_tiles_mirror_without_seams():
    from genfusion_ns.scenes.photos import load_photo, sample_tiled

    image = load_photo("brick")
    assert image.ndim == 3 and max(image.shape[:2]) <= 256 and not image.flags.writeable
    u = np.array([0.999, 1.001, 1.999, 2.001])
    v = np.full(4, 0.5)
    values = sample_tiled(image, u, v)
    assert np.abs(values[0] - values[1]).max() < 0.05 and np.abs(values[2] - values[3]).max() < 0.05


def test_walk_path_needs_a_street(tmp_path):
    with pytest.raises(SceneConfigError, match="--path walk needs --kind street"):
        generate_scene(tmp_path / "w", seed=1, views=4, train_views=2, resolution=8, kind="room", path="walk")
    with pytest.raises(SceneConfigError, match="--kind street is captured walking"):
        generate_scene(tmp_path / "w", seed=1, views=4, train_views=2, resolution=8, kind="street", path="orbit")
