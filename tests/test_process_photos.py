"""Real captures: ``genfusion-process-photos`` (photos to a nerfstudio dataset with pycolmap) and its test
data.

* the committed real capture ``tests/data/lund_small`` (8 phone photos, 160x120, poses and points from SfM)
loads
  through our validated dataparser, and its points land in its frames;
* the dataset writer on tiny synthetic reconstructions (no SfM): nerfstudio's conventions, checked by
projecting
  the written points with the written cameras and comparing with COLMAP's own projection;
* the photo handling and the command's messages (no pycolmap needed);
* slow: SfM end to end on six lund photos (skipped without pycolmap, the ``sfm`` extra) and five training
steps of
  ``genfusion-2dgs-lite`` on ``lund_small``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from nerfstudio.data.utils.colmap_parsing_utils import Camera, Image, Point3D, read_model, rotmat2qvec
from PIL import Image as PILImage

from genfusion_ns.sfm.cli import ProcessPhotosError, ProcessPhotosSummary, main, process_photos, summary_lines
from genfusion_ns.sfm.config import ProcessPhotosConfig
from genfusion_ns.sfm.photos import PhotoError, check_photo, copy_photos, list_photos
from genfusion_ns.sfm.reconstruct import Unregistered
from genfusion_ns.sfm.subset import SubsetConfig, make_subset
from genfusion_ns.sfm.transforms import write_dataset_files

LUND_SMALL = Path(__file__).parent / "data" / "lund_small"
LUND_PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "lund" / "images"


# ---------------------------------------------------------------------------------------------- helpers


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points and colours of the ascii ply nerfstudio's converter writes."""
    lines = path.read_text().splitlines()
    count = int(next(line for line in lines if line.startswith("element vertex")).split()[-1])
    body = lines[lines.index("end_header") + 1 :][:count]
    values = np.array([line.split() for line in body], dtype=np.float64).reshape(count, 6)
    return values[:, :3], values[:, 3:].astype(np.uint8)


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    axis_array = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array(
        [
            [0, -axis_array[2], axis_array[1]],
            [axis_array[2], 0, -axis_array[0]],
            [-axis_array[1], axis_array[0], 0],
        ]
    )
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def colmap_project(camera: Camera, R: np.ndarray, t: np.ndarray, X: np.ndarray) -> np.ndarray:
    """COLMAP's projection (OpenCV camera: x right, y down, z forward) for the models used here."""
    x = X @ R.T + t
    u, v = x[:, 0] / x[:, 2], x[:, 1] / x[:, 2]
    p = camera.params
    if camera.model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, k1, k2, p1, p2 = p[1], p[2], p[3], 0.0, 0.0, 0.0
    elif camera.model == "PINHOLE":
        fx, fy, cx, cy, k1, k2, p1, p2 = *p, 0.0, 0.0, 0.0, 0.0
    else:  # OPENCV
        fx, fy, cx, cy, k1, k2, p1, p2 = p
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2 * r2
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    return np.stack([fx * ud + cx, fy * vd + cy], axis=1)


def nerfstudio_project(intrinsics: dict, c2w: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Project world points ``P`` with a transforms.json frame (OpenGL camera) and its OPENCV intrinsics."""
    w2c = np.linalg.inv(c2w)
    q = P @ w2c[:3, :3].T + w2c[:3, 3]
    u, v = q[:, 0] / -q[:, 2], -q[:, 1] / -q[:, 2]  # OpenGL -> OpenCV: y and z flip
    k1, k2, p1, p2 = (intrinsics.get(key, 0.0) for key in ("k1", "k2", "p1", "p2"))
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2 * r2
    ud = u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u)
    vd = v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v)
    return np.stack(
        [intrinsics["fl_x"] * ud + intrinsics["cx"], intrinsics["fl_y"] * vd + intrinsics["cy"]], 1
    )


def synthetic_model(cameras: dict[int, Camera], camera_of: list[int], num_points: int = 40, seed: int = 0):
    """A consistent reconstruction: cameras walking forward along +z (COLMAP's world), points ahead of them,
    every point observed by every image (keypoints = COLMAP's projection of the point)."""
    rng = np.random.default_rng(seed)
    X = np.stack(
        [rng.uniform(-2, 2, num_points), rng.uniform(-1.5, 1.5, num_points), rng.uniform(6, 9, num_points)],
        axis=1,
    )
    images, tracks = {}, {point: [] for point in range(1, num_points + 1)}
    for index, camera_id in enumerate(camera_of):
        image_id = index + 1
        R = rotation((0.2, 1.0, 0.1), 6.0 * index - 5.0)
        center = np.array([0.3 * index, -0.1 * index, 0.5 * index])
        t = -R @ center
        xys = colmap_project(cameras[camera_id], R, t, X)
        images[image_id] = Image(
            id=image_id,
            qvec=rotmat2qvec(R),
            tvec=t,
            camera_id=camera_id,
            name=f"frame_{image_id:05d}.jpg",
            xys=xys,
            point3D_ids=np.arange(1, num_points + 1, dtype=np.int64),
        )
        for point, track in tracks.items():
            track.append((image_id, point - 1))
    points = {
        point: Point3D(
            id=point,
            xyz=X[point - 1],
            rgb=rng.integers(0, 256, 3).astype(np.uint8),
            error=0.5,
            image_ids=np.array([i for i, _ in track]),
            point2D_idxs=np.array([j for _, j in track]),
        )
        for point, track in tracks.items()
    }
    return cameras, images, points


def write_images(folder: Path, images: dict[int, Image], cameras: dict[int, Camera]) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for image in images.values():
        camera = cameras[image.camera_id]
        pixels = np.random.default_rng(image.id).integers(
            0, 256, (camera.height, camera.width, 3), dtype=np.uint8
        )
        PILImage.fromarray(pixels).save(folder / "images" / image.name, quality=95)


def load_dataparser_outputs(data: Path, split: str = "train"):
    """Our validated ``nerfstudio-data`` parser, exactly as ``ns-train genfusion-2dgs-lite --data`` builds
    it."""
    from genfusion_ns.method_configs import surfel_datamanager

    config = surfel_datamanager().dataparser
    config.data = data
    return config.setup().get_dataparser_outputs(split)


def fraction_seen(outputs_list) -> float:
    """Share of the seed points in front of and inside at least one frame (pinhole, dataparser's frame)."""
    points = outputs_list[0].metadata["points3D_xyz"].double().numpy()
    seen = np.zeros(len(points), dtype=bool)
    for outputs in outputs_list:
        cameras = outputs.cameras
        for index in range(len(cameras)):
            c2w = np.eye(4)
            c2w[:3] = cameras.camera_to_worlds[index].double().numpy()
            intrinsics = {
                "fl_x": float(cameras.fx[index]),
                "fl_y": float(cameras.fy[index]),
                "cx": float(cameras.cx[index]),
                "cy": float(cameras.cy[index]),
            }
            uv = nerfstudio_project(intrinsics, c2w, points)
            w2c = np.linalg.inv(c2w)
            depth = -(points @ w2c[2, :3] + w2c[2, 3])
            width, height = int(cameras.width[index]), int(cameras.height[index])
            seen |= (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    return float(seen.mean())


# ---------------------------------------------------------------------------------------------- (a)
# lund_small


def test_lund_small_loads_with_validated_parser():
    meta = json.loads((LUND_SMALL / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (160, 120) and meta["camera_model"] == "OPENCV"
    assert (LUND_SMALL / "LICENSE").is_file() and "BSD-2-Clause" in (LUND_SMALL / "README.md").read_text()
    size = sum(path.stat().st_size for path in LUND_SMALL.rglob("*") if path.is_file())
    assert size < 1_000_000

    train, val = load_dataparser_outputs(LUND_SMALL, "train"), load_dataparser_outputs(LUND_SMALL, "val")
    assert len(train.image_filenames) + len(val.image_filenames) == 8
    for outputs in (train, val):
        cameras = outputs.cameras
        assert set(cameras.width.flatten().tolist()) == {160} and set(cameras.height.flatten().tolist()) == {
            120
        }
        assert bool(cameras.camera_to_worlds.isfinite().all())
        assert cameras.distortion_params is not None and float(cameras.distortion_params[0, 0]) != 0.0
    xyz, rgb = train.metadata["points3D_xyz"], train.metadata["points3D_rgb"]
    assert xyz.shape[0] > 500 and xyz.shape == rgb.shape and bool(xyz.isfinite().all())
    assert fraction_seen([train, val]) > 0.95  # the SfM points land in the frames that saw them


# ---------------------------------------------------------------------------------------------- (b) the
# writer


def test_writer_follows_nerfstudio_conventions_with_a_shared_camera(tmp_path):
    camera = Camera(
        id=1, model="SIMPLE_RADIAL", width=64, height=48, params=np.array([50.0, 31.5, 24.5, -0.05])
    )
    cameras, images, points = synthetic_model({1: camera}, [1, 1, 1])
    assert write_dataset_files(tmp_path, cameras, images, points) == 3

    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and (meta["w"], meta["h"]) == (64, 48)
    assert (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["k1"]) == (50.0, 50.0, 31.5, 24.5, -0.05)
    assert meta["ply_file_path"] == "sparse_pc.ply"
    applied = np.array(meta["applied_transform"])
    assert np.allclose(applied, [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])  # COLMAP's y-down world to z-up
    xyz, rgb = read_ply(tmp_path / "sparse_pc.ply")
    X = np.stack([points[i].xyz for i in sorted(points)])
    assert np.allclose(xyz, X @ applied[:, :3].T, atol=1e-5)
    assert np.array_equal(rgb, np.stack([points[i].rgb for i in sorted(points)]))

    for frame, image in zip(meta["frames"], images.values()):
        assert frame["file_path"] == f"images/{image.name}" and "fl_x" not in frame
        c2w = np.array(frame["transform_matrix"])
        centre = -image.qvec2rotmat().T @ image.tvec
        assert np.allclose(c2w[:3, 3], applied[:, :3] @ centre)
        assert np.allclose(np.linalg.det(c2w[:3, :3]), 1.0)
        # the written camera sees the written points where COLMAP's camera saw them (OpenGL axes, distortion)
        assert np.allclose(nerfstudio_project(meta, c2w, xyz), image.xys, atol=1e-3)

    cameras_back, images_back, points_back = read_model(str(tmp_path / "colmap" / "sparse" / "0"), ext=".bin")
    assert cameras_back[1].model == "SIMPLE_RADIAL" and np.allclose(cameras_back[1].params, camera.params)
    assert [image.name for image in images_back.values()] == [image.name for image in images.values()]
    assert len(points_back) == len(points) and np.allclose(points_back[3].xyz, points[3].xyz)


def test_writer_puts_several_cameras_in_the_frames(tmp_path):
    cameras = {
        1: Camera(
            id=1,
            model="OPENCV",
            width=40,
            height=30,
            params=np.array([36.0, 35.0, 20.2, 14.8, 0.01, -0.002, 0.001, 0.0005]),
        ),
        2: Camera(id=2, model="PINHOLE", width=30, height=40, params=np.array([33.0, 34.0, 15.0, 20.0])),
    }
    cameras, images, points = synthetic_model(cameras, [1, 2, 1, 2], num_points=25)
    write_dataset_files(tmp_path, cameras, images, points)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert "fl_x" not in meta and "camera_model" not in meta
    xyz, _ = read_ply(tmp_path / "sparse_pc.ply")
    for frame, image in zip(meta["frames"], images.values()):
        camera = cameras[image.camera_id]
        assert (frame["w"], frame["h"], frame["camera_model"]) == (camera.width, camera.height, "OPENCV")
        assert np.allclose(
            nerfstudio_project(frame, np.array(frame["transform_matrix"]), xyz), image.xys, atol=1e-3
        )


def test_written_dataset_loads_through_the_validated_parser(tmp_path):
    camera = Camera(
        id=1, model="SIMPLE_RADIAL", width=48, height=36, params=np.array([40.0, 24.0, 18.0, 0.01])
    )
    cameras, images, points = synthetic_model({1: camera}, [1] * 5)
    write_images(tmp_path, images, cameras)
    write_dataset_files(tmp_path, cameras, images, points)
    outputs = load_dataparser_outputs(tmp_path)
    assert outputs.metadata["points3D_xyz"].shape == (40, 3)
    assert int(outputs.cameras.width[0]) == 48 and int(outputs.cameras.height[0]) == 36
    assert fraction_seen([outputs]) == 1.0


def test_subset_scales_the_camera_and_keeps_the_points_its_frames_see(tmp_path):
    camera = Camera(
        id=1, model="SIMPLE_RADIAL", width=64, height=48, params=np.array([50.0, 32.0, 24.0, -0.02])
    )
    cameras, images, points = synthetic_model({1: camera}, [1] * 6, num_points=30)
    # points 1-10 seen only by frames 1-2: a subset of frames 3-6 must drop them and cut the other tracks
    for image_id in (3, 4, 5, 6):
        ids = images[image_id].point3D_ids.copy()
        ids[:10] = -1
        images[image_id] = images[image_id]._replace(point3D_ids=ids)
    for point_id in range(1, 11):
        point = points[point_id]
        points[point_id] = point._replace(image_ids=point.image_ids[:2], point2D_idxs=point.point2D_idxs[:2])
    scene = tmp_path / "scene"
    write_images(scene, images, cameras)
    write_dataset_files(scene, cameras, images, points)

    make_subset(SubsetConfig(scene=scene, output=tmp_path / "small", start=2, count=4, long_side=32))
    small = tmp_path / "small"
    meta = json.loads((small / "transforms.json").read_text())
    assert (meta["w"], meta["h"], meta["fl_x"], meta["cx"], meta["cy"]) == (32, 24, 25.0, 16.0, 12.0)
    assert [frame["file_path"] for frame in meta["frames"]] == [
        f"images/frame_{i:05d}.jpg" for i in range(1, 5)
    ]
    assert PILImage.open(small / "images" / "frame_00001.jpg").size == (32, 24)
    xyz, _ = read_ply(small / "sparse_pc.ply")
    assert len(xyz) == 20
    for frame, image_id in zip(meta["frames"], (3, 4, 5, 6)):
        uv = nerfstudio_project(meta, np.array(frame["transform_matrix"]), xyz)
        assert np.allclose(uv, images[image_id].xys[10:] * 0.5, atol=1e-3)
    _, images_back, points_back = read_model(str(small / "colmap" / "sparse" / "0"), ext=".bin")
    for point in points_back.values():  # every track element points at its own keypoint
        assert len(point.image_ids) == 4
        for image_id, index in zip(point.image_ids, point.point2D_idxs):
            assert images_back[int(image_id)].point3D_ids[index] == point.id


# ---------------------------------------------------------------------------------------------- photos,
# messages


def save_photo(path: Path, size: tuple[int, int], orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[: size[1] // 2] = (255, 0, 0)  # red top half: shows which way is up
    image = PILImage.fromarray(pixels)
    exif = PILImage.Exif()
    exif[0x010F] = "TestMake"
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, quality=95, exif=exif.tobytes())


def test_list_photos_explains_unusable_folders(tmp_path):
    with pytest.raises(PhotoError, match="does not exist"):
        list_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos")
    with pytest.raises(PhotoError, match="No photos"):
        list_photos(tmp_path / "empty")
    save_photo(tmp_path / "one" / "a.jpg", (8, 6))
    with pytest.raises(PhotoError, match="at least two"):
        list_photos(tmp_path / "one")
    (tmp_path / "one" / "b.CR2").write_bytes(b"raw")
    with pytest.raises(PhotoError, match="raw photo"):
        list_photos(tmp_path / "one")


def test_unreadable_photo_is_named(tmp_path):
    save_photo(tmp_path / "good.jpg", (32, 24))
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(PhotoError, match=r"cut\.jpg cannot be read"):
        check_photo(tmp_path / "cut.jpg")


def test_copy_photos_renames_downscales_and_turns_upright(tmp_path):
    photos_dir = tmp_path / "photos"
    save_photo(photos_dir / "b.jpg", (101, 75))
    save_photo(photos_dir / "a" / "z.jpg", (101, 75))
    save_photo(photos_dir / "c.jpg", (101, 75), orientation=6)  # stored landscape, shown portrait
    paths = list_photos(photos_dir)
    assert [path.relative_to(photos_dir).as_posix() for path in paths] == ["a/z.jpg", "b.jpg", "c.jpg"]
    photos = [check_photo(path) for path in paths]
    assert (photos[2].width, photos[2].height, photos[2].rotated) == (75, 101, True)
    sources = copy_photos(photos, tmp_path / "out" / "images", num_downscales=3)
    assert sources == {"frame_00001.jpg": paths[0], "frame_00002.jpg": paths[1], "frame_00003.jpg": paths[2]}
    out = tmp_path / "out"
    assert (out / "images" / "frame_00002.jpg").read_bytes() == paths[1].read_bytes()  # unrotated: same bytes
    for factor, size in ((2, (50, 37)), (4, (25, 18)), (8, (12, 9))):  # sizes round down, like ffmpeg's iw/N
        assert PILImage.open(out / f"images_{factor}" / "frame_00001.jpg").size == size
    upright = PILImage.open(out / "images" / "frame_00003.jpg")
    assert upright.size == (75, 101) and upright.getexif().get(0x0112, 1) == 1
    assert upright.getexif().get(0x010F) == "TestMake"  # the rest of the EXIF (focal length prior) is kept
    pixels = np.asarray(upright)
    assert (
        pixels[50, -8:, 0].mean() > 200 and pixels[50, :8, 0].mean() < 50
    )  # orientation 6: top turned right
    assert PILImage.open(out / "images_2" / "frame_00003.jpg").size == (37, 50)


def test_missing_pycolmap_is_a_message_with_the_install_command(tmp_path, monkeypatch, capsys):
    for name in ("a.jpg", "b.jpg"):
        save_photo(tmp_path / "photos" / name, (16, 12))
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(ProcessPhotosConfig(photos=tmp_path / "photos", output=tmp_path / "scene"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "genfusion-process-photos: error:" in error and 'pip install -e ".[sfm]"' in " ".join(
        error.split()
    )
    assert not (tmp_path / "scene").exists() and not (tmp_path / "scene.partial").exists()


def test_bad_input_exits_before_writing(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(ProcessPhotosConfig(photos=tmp_path / "photos", output=tmp_path / "scene"))
    assert exit_info.value.code == 2 and "No photos" in capsys.readouterr().err
    for name in ("a.jpg", "b.jpg"):
        save_photo(tmp_path / "photos" / name, (16, 12))
    with pytest.raises(SystemExit):  # writing into the photo folder would modify the input
        main(ProcessPhotosConfig(photos=tmp_path / "photos", output=tmp_path / "photos" / "scene"))
    assert "inside the photo folder" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit):
        main(ProcessPhotosConfig(photos=tmp_path / "photos", output=tmp_path / "scene", overlap=0))
    assert "--overlap 0" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["photos"]


def test_summary_names_the_photos_left_out():
    summary = ProcessPhotosSummary(
        output=Path("scene"),
        num_photos=3,
        num_registered=2,
        num_points=120,
        mean_reprojection_error=0.61234,
        camera="SIMPLE_RADIAL 64x48 (50, 32, 24, -0.02)",
        focal_prior=55.0,
        other_models=[],
        unregistered=[Unregistered("frame_00003.jpg", Path("photos/c.jpg"), "no verified matches")],
        seconds={"copying": 0.1, "features": 1.0, "matching": 2.0, "mapping": 0.5, "total": 3.7},
    )
    text = "\n".join(summary_lines(summary))
    assert "Registered 2 of 3 photos in 3.7 s" in text and "0.612 px, 120 points" in text
    assert "c.jpg (frame_00003.jpg): no verified matches" in text and "EXIF focal prior 55.0 px" in text


# ---------------------------------------------------------------------------------------------- (c), (d) slow


@pytest.mark.slow
def test_structure_from_motion_end_to_end_on_six_lund_photos(tmp_path):
    pytest.importorskip("pycolmap", reason="the sfm extra (pip install -e '.[sfm]') is not installed")
    if not LUND_PHOTOS.is_dir():
        pytest.skip(f"the lund photos are not at {LUND_PHOTOS}")
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(1, 7):  # 768x576 copies, EXIF kept (the focal-length prior)
        with PILImage.open(LUND_PHOTOS / f"{number:02d}.jpg") as photo:
            photo.resize((768, 576), PILImage.Resampling.LANCZOS).save(
                photos / f"{number:02d}.jpg", quality=90, exif=photo.info["exif"]
            )
    start = time.perf_counter()
    # one thread: pycolmap's result is then the same on every run
    summary = process_photos(
        ProcessPhotosConfig(photos=photos, output=tmp_path / "scene", num_threads=1), log=lambda _: None
    )
    assert time.perf_counter() - start < 60
    assert (summary.num_photos, summary.num_registered, summary.unregistered) == (6, 6, [])
    assert summary.mean_reprojection_error < 1.5 and summary.num_points > 100
    assert summary.focal_prior is not None

    scene = tmp_path / "scene"
    meta = json.loads((scene / "transforms.json").read_text())
    assert len(meta["frames"]) == 6 and (meta["w"], meta["h"]) == (768, 576)
    for factor in (2, 4, 8):
        assert PILImage.open(scene / f"images_{factor}" / "frame_00006.jpg").size == (
            768 // factor,
            576 // factor,
        )
    assert (scene / "colmap" / "database.db").is_file() and (scene / "colmap" / "sparse" / "0").is_dir()
    assert json.loads((scene / "colmap" / "summary.json").read_text())["num_registered"] == 6
    assert (
        fraction_seen([load_dataparser_outputs(scene, "train"), load_dataparser_outputs(scene, "val")]) > 0.95
    )
    with pytest.raises(
        ProcessPhotosError, match="--overwrite"
    ):  # an earlier output is never replaced silently
        process_photos(ProcessPhotosConfig(photos=photos, output=scene), log=lambda _: None)


@pytest.mark.slow
def test_lite_trains_five_steps_on_the_real_capture(tmp_path, single_torch_thread):
    import torch

    from genfusion_ns.method_configs import genfusion_2dgs_lite

    data = tmp_path / "lund_small"
    shutil.copytree(
        LUND_SMALL, data
    )  # nerfstudio may write next to the dataset; keep the committed one clean
    from run_configs import finish, short_cpu_run

    config = short_cpu_run(genfusion_2dgs_lite.config, data, tmp_path / "outputs", 5)
    config.pipeline.model.supersample = 1
    finish(config)
    torch.manual_seed(0)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    assert model.num_points > 500  # initialised from the SfM points, not at random
    losses = []
    compute_losses = model.get_loss_dict

    def recording(*args, **kwargs):
        loss_dict = compute_losses(*args, **kwargs)
        losses.append(float(loss_dict["main_loss"]))
        return loss_dict

    model.get_loss_dict = recording
    trainer.train()
    assert len(losses) == 5 and all(np.isfinite(losses))
    camera = trainer.pipeline.datamanager.train_dataset.cameras[0:1]
    model.eval()
    with torch.no_grad():
        rgb = model.get_outputs_for_camera(camera)["rgb"]
    # nerfstudio undistorts the 160x120 photos (k1 != 0) and crops them to the valid area: one pixel less here
    height, width = trainer.pipeline.datamanager.cached_train[0]["image"].shape[:2]
    assert tuple(rgb.shape) == (height, width, 3) and 150 <= width <= 160 and 110 <= height <= 120
    assert width / height == pytest.approx(4 / 3, rel=0.02) and bool(rgb.isfinite().all())
