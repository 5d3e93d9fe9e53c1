"""A few consecutive frames of a processed capture, downscaled: a real-capture dataset small enough for tests.

``python -m genfusion_ns.sfm.subset SCENE --output SMALL --count 8 --long-side 160`` reads SCENE's
``colmap/sparse/0`` (written by ``genfusion-process-photos`` or ``ns-process-data``), keeps ``--count``
consecutive registered frames (from ``--start``, or the run whose frames share the most points), scales the
photos and the camera to ``--long-side`` pixels, keeps the points those frames see (their tracks cut to those
frames, keypoints without a point dropped), writes the dataset with the same writer as the command and lists a
held-out frame (``--holdout``) in ``val_filenames`` / ``test_filenames``. No pycolmap needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from nerfstudio.data.utils.colmap_parsing_utils import Camera, Image, Point3D, read_model
from PIL import Image as PILImage

from genfusion_ns.errors import UserError
from genfusion_ns.outputs import exit_with_error, staged_output_folder

from .cli import SUMMARY_FILE
from .transforms import MODEL_DIR, write_dataset_files

COMMAND = "genfusion_ns.sfm.subset"
SINGLE_FOCAL = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE")
"""COLMAP models whose parameters start f, cx, cy; the others start fx, fy, cx, cy."""


class SubsetError(UserError, ValueError):
    """The scene or an option of the subset tool is unusable; the message says why."""


@dataclass
class SubsetConfig:
    """Cut a small dataset of consecutive frames out of a processed capture."""

    scene: tyro.conf.Positional[Path]
    """Processed dataset (holds colmap/sparse/0 and images/)."""
    output: Path
    """Folder to write (absent or empty, or an earlier output of this tool with --overwrite)."""
    count: int = 8
    """Consecutive registered frames to keep."""
    start: int | None = None
    """First frame to keep (0-based, in file order of the registered frames); default: the run sharing most
    points."""
    long_side: int = 160
    """Long side of the written images in pixels."""
    holdout: tuple[int, ...] | None = None
    """Frames of the subset (1-based) listed as val/test_filenames; default: the middle one. ``()``: none
    (then nerfstudio's own split applies, which holds out nothing for 8 frames)."""
    jpeg_quality: int = 90
    overwrite: bool = False


def scale_camera(camera: Camera, width: int, height: int) -> Camera:
    """``camera`` for images resized to ``width`` x ``height`` (focal lengths and principal point scale)."""
    sx, sy = width / camera.width, height / camera.height
    params = np.array(camera.params, dtype=np.float64)
    if camera.model in SINGLE_FOCAL:
        params[0] *= sx
        params[1] *= sx
        params[2] *= sy
    else:
        params[[0, 2]] *= sx
        params[[1, 3]] *= sy
    return Camera(id=camera.id, model=camera.model, width=width, height=height, params=params)


def _best_start(images: list[Image], count: int) -> int:
    """Start of the ``count``-frame run whose frames see the most points seen by two of them or more."""
    best, best_score = 0, -1
    for start in range(len(images) - count + 1):
        seen: dict[int, int] = {}
        for image in images[start : start + count]:
            for point_id in {int(i) for i in image.point3D_ids if i >= 0}:
                seen[point_id] = seen.get(point_id, 0) + 1
        score = sum(1 for times in seen.values() if times >= 2)
        if score > best_score:
            best, best_score = start, score
    return best


def make_subset(config: SubsetConfig) -> dict[str, str]:
    """Write the subset; returns each written frame's name in the scene (and its source photo when known)."""
    model_dir = config.scene / MODEL_DIR / "0"
    if not (model_dir / "images.bin").is_file():
        raise SubsetError(f"{config.scene} has no COLMAP model {model_dir}; process the photos first.")
    if config.count < 2 or config.long_side < 8:
        raise SubsetError("--count must be 2 or more and --long-side 8 or more.")
    cameras, images_by_id, points = read_model(str(model_dir), ext=".bin")
    ordered = sorted(images_by_id.values(), key=lambda image: image.name)
    if len(ordered) < config.count:
        raise SubsetError(
            f"{config.scene} has {len(ordered)} registered frames, fewer than --count {config.count}."
        )
    start = _best_start(ordered, config.count) if config.start is None else config.start
    if not 0 <= start <= len(ordered) - config.count:
        raise SubsetError(f"--start {start} leaves fewer than {config.count} frames (of {len(ordered)}).")
    chosen = ordered[start : start + config.count]
    summary_path = config.scene / SUMMARY_FILE
    sources = json.loads(summary_path.read_text()).get("sources", {}) if summary_path.is_file() else {}

    keep = {int(i) for image in chosen for i in image.point3D_ids if i >= 0}
    new_cameras: dict[int, Camera] = {}
    new_images: dict[int, Image] = {}
    point2D_index: dict[tuple[int, int], int] = {}  # (image id, old keypoint index) -> new index
    origin = {}
    with staged_output_folder(
        config.output, config.overwrite, COMMAND, {"the scene": config.scene}, error=SubsetError
    ) as staged:
        (staged / "images").mkdir()
        for number, image in enumerate(chosen, start=1):
            camera = cameras[image.camera_id]
            scale = config.long_side / max(camera.width, camera.height)
            width, height = round(camera.width * scale), round(camera.height * scale)
            if image.camera_id not in new_cameras:
                new_cameras[image.camera_id] = scale_camera(camera, width, height)
            name = f"frame_{number:05d}.jpg"
            with PILImage.open(config.scene / "images" / image.name) as photo:
                photo.convert("RGB").resize((width, height), PILImage.Resampling.LANCZOS).save(
                    staged / "images" / name, quality=config.jpeg_quality
                )
            observed = [index for index, point_id in enumerate(image.point3D_ids) if point_id in keep]
            for new_index, old_index in enumerate(observed):
                point2D_index[(image.id, old_index)] = new_index
            xys = image.xys[observed] * [width / camera.width, height / camera.height]
            new_images[image.id] = Image(
                id=image.id,
                qvec=image.qvec,
                tvec=image.tvec,
                camera_id=image.camera_id,
                name=name,
                xys=xys,
                point3D_ids=image.point3D_ids[observed],
            )
            origin[name] = image.name + (
                f" ({Path(sources[image.name]).name})" if image.name in sources else ""
            )
        new_points = {}
        for point_id in sorted(keep):
            point = points[point_id]
            track = [(int(i), int(j)) for i, j in zip(point.image_ids, point.point2D_idxs)]
            track = [element for element in track if element in point2D_index]
            new_points[point_id] = Point3D(
                id=point_id,
                xyz=point.xyz,
                rgb=point.rgb,
                error=point.error,
                image_ids=np.array([i for i, _ in track], dtype=np.int64),
                point2D_idxs=np.array([point2D_index[t] for t in track], dtype=np.int64),
            )
        write_dataset_files(staged, new_cameras, new_images, new_points)
        holdout = (config.count // 2 + 1,) if config.holdout is None else config.holdout
        if holdout:
            if not all(1 <= number <= config.count for number in holdout):
                raise SubsetError(f"--holdout {holdout}: frame numbers run from 1 to {config.count}.")
            transforms = staged / "transforms.json"
            meta = json.loads(transforms.read_text())
            files = [frame["file_path"] for frame in meta["frames"]]
            held = [files[number - 1] for number in sorted(set(holdout))]
            meta["train_filenames"] = [name for name in files if name not in held]
            meta["val_filenames"] = meta["test_filenames"] = held
            transforms.write_text(json.dumps(meta, indent=4))
    return origin


def entrypoint() -> None:
    config = tyro.cli(SubsetConfig, description=SubsetConfig.__doc__)
    try:
        origin = make_subset(config)
    except UserError as error:
        exit_with_error(COMMAND, error)
    for name, source in origin.items():
        print(f"{name} <- {source}")


if __name__ == "__main__":
    entrypoint()
