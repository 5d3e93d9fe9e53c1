"""nerfstudio's ``nerfstudio-data`` parser plus a validation pass: each dataset mistake becomes one message.

Left alone, a missing folder, a truncated ``transforms.json`` or image, a NaN pose, a missing seed-point file
or a corrupt depth PNG surface as a traceback from deep inside nerfstudio, PIL or numpy -- some only after the
first training step, some never (a missing ``ply_file_path`` silently becomes random initialisation). Every
check here runs while the datamanager is set up, i.e. before step 0, and raises :class:`DatasetError` naming
the file and the fix; ``ns-train`` prints it as one short message, not a traceback
(the other ``ns-*`` commands through :func:`genfusion_ns.errors.install_user_error_hook`).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from nerfstudio.cameras.cameras import CAMERA_MODEL_TO_TYPE
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from rich.markup import escape

from genfusion_ns.errors import UserError
from genfusion_ns.point_clouds import PointCloudError, read_point_cloud

INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
"""Per-camera values nerfstudio needs, either at the top level of transforms.json or in every frame."""
POSITIVE = ("fl_x", "fl_y", "w", "h")
SPLIT_LISTS = ("train_filenames", "val_filenames", "test_filenames")
COLMAP_MODEL = Path("colmap") / "sparse" / "0"
"""The COLMAP model ``ns-process-data`` leaves in a dataset; nerfstudio reads its points when no ply is named."""
DROP_FRAME = "or remove its frame from transforms.json (and from any train/val/test_filenames)."


class DatasetError(UserError, ValueError):
    """A dataset mistake the user can fix; the message says what is wrong, in which file, and what to do.

    A :class:`~genfusion_ns.errors.UserError` (GenFusion's trainer prints it as a message) and a ValueError.
    """


def _load_transforms(data: Path) -> tuple[Path, dict[str, Any]]:
    """``(transforms.json path, parsed content)`` for ``--data`` (a dataset folder or its json file)."""
    if not data.exists():
        raise DatasetError(
            f"Dataset folder '{data}' does not exist. Pass --data with the folder that holds transforms.json "
            "(e.g. one written by genfusion-scene or ns-process-data)."
        )
    transforms = data if data.suffix == ".json" else data / "transforms.json"
    if not transforms.is_file():
        raise DatasetError(
            f"'{data}' has no transforms.json. Pass --data with a nerfstudio-format dataset folder (images "
            "plus transforms.json, e.g. from `ns-process-data images` or `genfusion-scene`) or its json file."
        )
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{transforms} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            "the file looks truncated or hand-edited. Restore it or regenerate the dataset."
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"{transforms} cannot be read ({error}). Restore it or regenerate the dataset."
        ) from error
    if not isinstance(meta, dict):
        raise DatasetError(
            f"{transforms} must hold a JSON object with a 'frames' list, not {type(meta).__name__}."
        )
    return transforms, meta


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_frames(transforms: Path, meta: dict[str, Any], split: str) -> None:
    """What nerfstudio's parser asserts on or crashes over: frames, poses, intrinsics, split lists."""
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError(
            f"{transforms} lists no frames ('frames' is missing or empty). Add one entry per image with "
            "'file_path' and a 4x4 'transform_matrix', or regenerate the dataset."
        )
    if "camera_model" in meta and meta["camera_model"] not in CAMERA_MODEL_TO_TYPE:
        raise DatasetError(
            f"{transforms}: unknown camera_model {meta['camera_model']!r}; "
            f"use one of {', '.join(sorted(CAMERA_MODEL_TO_TYPE))}."
        )
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DatasetError(
                f"{transforms}: frame {index} has no 'file_path'; every frame must name its image."
            )
        name = f"frame {index} ('{frame['file_path']}')"
        try:
            pose = np.asarray(frame.get("transform_matrix"), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DatasetError(
                f"{transforms}: {name} has no numeric 4x4 'transform_matrix' ({error}); "
                "fix or drop that frame."
            ) from error
        if pose.shape != (4, 4):
            raise DatasetError(
                f"{transforms}: {name} has a transform_matrix of shape {list(pose.shape)}, not 4x4 "
                "(camera-to-world); fix or drop that frame."
            )
        if not np.isfinite(pose).all():
            raise DatasetError(
                f"{transforms}: {name} has NaN or infinite values in its transform_matrix (a failed pose "
                "estimate?). Fix the pose, or drop that frame (and its name from any split list)."
            )
        for key in INTRINSICS:
            value = meta.get(key, frame.get(key))
            if value is None:
                raise DatasetError(
                    f"{transforms}: '{key}' is given neither at the top level nor in {name}; nerfstudio "
                    f"needs {', '.join(INTRINSICS)} for every camera."
                )
            if not _finite_number(value) or (key in POSITIVE and value <= 0):
                raise DatasetError(
                    f"{transforms}: '{key}' of {name} is {value!r}; it must be a finite positive number."
                )
    for key in ("mask_path", "depth_file_path"):
        count = sum(key in frame for frame in frames)
        if 0 < count < len(frames):
            raise DatasetError(
                f"{transforms}: '{key}' is given for {count} of {len(frames)} frames; "
                "give it for all or none."
            )
    listed = [key for key in SPLIT_LISTS if key in meta]
    if listed and f"{split}_filenames" not in meta:
        raise DatasetError(
            f"{transforms} has {', '.join(listed)} but no '{split}_filenames', which nerfstudio needs once "
            f"any split list is given. Add '{split}_filenames' (held-out images; may equal test)."
        )


def _image_problem(
    path: Path, bands: tuple[int, ...], decode: bool = True
) -> tuple[str | None, tuple[int, int]]:
    """``(why the image cannot be used as nerfstudio loads it (PIL, fully decoded) or None, its (w, h))``.

    ``decode=False`` reads the header only, as nerfstudio does for the first frame while parsing."""
    if not path.is_file():
        return f"does not exist. Restore it, {DROP_FRAME}", (0, 0)
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
            size, channels = image.size, len(image.getbands())
    except Exception as error:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ...
        problem = (
            f"cannot be decoded ({error}): it is truncated or corrupt. Re-export or re-copy it, {DROP_FRAME}"
        )
        return problem, (0, 0)
    if channels not in bands:
        return f"has {channels} channels; nerfstudio reads {' or '.join(map(str, bands))}. Convert it.", size
    return None, size


def _depth_problem(path: Path) -> str | None:
    """Why the depth file cannot be read as nerfstudio reads it (OpenCV, or numpy for .npy), or ``None``."""
    if not path.is_file():
        return f"does not exist. Restore it, {DROP_FRAME}"
    try:
        if path.suffix == ".npy":
            depth = np.load(path)
        else:
            depth = cv2.imread(str(path.absolute()), cv2.IMREAD_ANYDEPTH)
    except Exception as error:  # noqa: BLE001 -- numpy raises ValueError, OSError, EOFError, ...
        return f"cannot be decoded ({error}): it is truncated or corrupt. Re-export it, {DROP_FRAME}"
    if depth is None:
        return (
            f"cannot be decoded (OpenCV read nothing): it is truncated or corrupt. Re-export it, {DROP_FRAME}"
        )
    if depth.ndim != 2:
        return f"has shape {list(depth.shape)}; a depth map must be a single-channel image or a 2-D .npy"
    return None


def _stereo_seed_points(outputs: DataparserOutputs) -> dict[str, Any]:
    """``points3D_xyz`` / ``points3D_rgb`` (nerfstudio's seed-point metadata) from the training views, or nothing
    when too few agree."""
    from genfusion_ns.model.stereo_points import plane_sweep_points

    cameras = outputs.cameras
    images = [torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
              for path in outputs.image_filenames]
    intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).float()
    xyz, rgb = plane_sweep_points(images, cameras.camera_to_worlds.float(), intrinsics)
    if len(xyz) < 4:
        CONSOLE.print("[bold yellow]Warning: the dataset has no seed points and its training views agree on too "
                      "few pixels to triangulate any; training starts from random points.", soft_wrap=True)
        return {}
    CONSOLE.print(f"No seed-point file: {len(xyz)} seed points triangulated where the {len(images)} training views "
                  "agree (`nerfstudio-data --points-without-ply none` starts from random points instead).",
                  soft_wrap=True)
    return {"points3D_xyz": xyz, "points3D_rgb": rgb}


def _colmap_seed_points(model_dir: Path, outputs: DataparserOutputs) -> dict[str, Any]:
    """``points3D_xyz`` / ``points3D_rgb`` from a COLMAP model's points in the dataparser's frame, or nothing when the
    model holds none. COLMAP points are in the frame of the model's poses, so one ``dataparser_transform`` (which
    includes ``applied_transform``) and ``dataparser_scale`` take them where nerfstudio's ``sparse_pc.ply`` points go."""
    from nerfstudio.data.utils.colmap_parsing_utils import read_points3D_binary, read_points3D_text

    binary, text = model_dir / "points3D.bin", model_dir / "points3D.txt"
    try:
        points = read_points3D_binary(binary) if binary.is_file() else read_points3D_text(text)
    except (OSError, ValueError, struct.error, IndexError) as error:
        CONSOLE.print(f"[bold yellow]Warning: the COLMAP points in {escape(str(model_dir))} cannot be read "
                      f"({type(error).__name__}: {escape(str(error))}); they are not used.", soft_wrap=True)
        return {}
    if not points:
        return {}
    xyz = torch.from_numpy(np.array([p.xyz for p in points.values()], dtype=np.float32))
    rgb = torch.from_numpy(np.array([p.rgb for p in points.values()], dtype=np.uint8))
    transform = outputs.dataparser_transform.float()
    xyz = (xyz @ transform[:3, :3].T + transform[:3, 3]) * float(outputs.dataparser_scale)
    return {"points3D_xyz": xyz, "points3D_rgb": rgb}


def _first_failure(check: Callable[[int], str | None], count: int) -> str | None:
    """The first non-``None`` ``check(i)`` over ``range(count)``, on a few threads (decoders free the GIL)."""
    executor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    try:
        for problem in executor.map(check, range(count)):
            if problem is not None:
                return problem
        return None
    finally:
        executor.shutdown(cancel_futures=True)


class ValidatedNerfstudio(Nerfstudio):
    """nerfstudio's parser, checking the dataset before (structure, named files) and after parsing (files)."""

    config: ValidatedNerfstudioDataParserConfig

    def __init__(self, config: ValidatedNerfstudioDataParserConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._checked_files: set[Path] = set()
        self._reads_files: bool | None = None

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Any) -> DataparserOutputs:
        if self._reads_files is None:
            # nerfstudio's datamanagers preset downscale_factor = 1 in inference mode (ns-viewer, ns-export)
            # so that no image is opened; images, depths and seed points are then not read, and not checked.
            self._reads_files = self.downscale_factor is None
        transforms, meta = _load_transforms(Path(self.config.data))
        _check_frames(transforms, meta, split)
        if self._reads_files:
            self._check_before_parsing(transforms, meta)
        colmap_model = transforms.parent / COLMAP_MODEL
        colmap_points = self.config.load_3D_points and "ply_file_path" not in meta and colmap_model.is_dir()
        if colmap_points:
            # nerfstudio would stop and ask (on the terminal) whether to rewrite the user's transforms.json with a
            # new sparse_pc.ply; the points are read into memory below instead, and the dataset stays as it is.
            self.prompted_user, self.create_pc = True, False
        try:
            outputs = super()._generate_dataparser_outputs(split, **kwargs)
        except (AssertionError, RuntimeError) as error:  # nerfstudio's own complaints about the data
            raise DatasetError(f"nerfstudio cannot read {transforms}: {str(error).strip()}") from error
        self._check_outputs(transforms, meta, split, outputs)
        if split == "train" and self._reads_files and colmap_points:
            points = _colmap_seed_points(colmap_model, outputs)
            if points:
                CONSOLE.print(f"{escape(str(transforms))} names no ply_file_path: seed points are the "
                              f"{len(points['points3D_xyz'])} points of {escape(str(colmap_model))} (the dataset "
                              "is not changed).", soft_wrap=True)
            outputs.metadata.update(points)
        if (split == "train" and self._reads_files and self.config.load_3D_points
                and self.config.points_without_ply == "stereo" and "points3D_xyz" not in outputs.metadata):
            outputs.metadata.update(_stereo_seed_points(outputs))
        return outputs

    def _load_3D_points(self, ply_file_path: Path, transform_matrix: torch.Tensor, scale_factor: float
                        ) -> dict[str, torch.Tensor] | None:
        """nerfstudio's seed points from ``ply_file_path`` (same transform and scale), read with plyfile instead of
        Open3D (``genfusion_ns/point_clouds.py``); points without colours get grey (nerfstudio would pass an
        empty colour array). In inference mode (no file is checked, a checkpoint supplies the surfels) a missing or
        unreadable file means no points, as with Open3D."""
        try:
            cloud = read_point_cloud(Path(ply_file_path))
        except PointCloudError as error:
            if not self._reads_files:
                return None
            raise DatasetError(str(error)) from error
        if len(cloud) == 0:
            return None
        points = torch.from_numpy(cloud.points.astype(np.float32))
        points = torch.cat((points, torch.ones_like(points[..., :1])), -1) @ transform_matrix.T
        colors = cloud.colors if cloud.colors is not None else np.full((len(cloud), 3), 128, dtype=np.uint8)
        return {"points3D_xyz": points * scale_factor, "points3D_rgb": torch.from_numpy(colors)}

    def _check_before_parsing(self, transforms: Path, meta: dict[str, Any]) -> None:
        """Files nerfstudio opens while parsing: seed points and (auto downscale) the first frame's image."""
        if self.config.load_3D_points and "ply_file_path" in meta:
            ply = transforms.parent / str(meta["ply_file_path"])
            if not ply.is_file():
                raise DatasetError(
                    f"{transforms} names ply_file_path '{meta['ply_file_path']}' but {ply} does not exist. "
                    "Restore the seed-point file, or remove ply_file_path from transforms.json to start from "
                    "random points."
                )
        if self.config.downscale_factor is None and self.downscale_factor is None:
            first = transforms.parent / meta["frames"][0]["file_path"]
            problem, _ = _image_problem(first, bands=(1, 3, 4), decode=False)  # decoded once, after parsing
            if problem is not None:
                raise DatasetError(f"Image {first} (frame 0 of {transforms}) {problem}")

    def _check_outputs(
        self, transforms: Path, meta: dict[str, Any], split: str, outputs: DataparserOutputs
    ) -> None:
        """Split size, normalised poses, and every image / mask / depth file of the split, decoded once."""
        count = len(outputs.image_filenames)
        if count == 0 and split == "train":
            how = (
                "train_filenames is empty"
                if "train_filenames" in meta
                else f"eval-mode {self.config.eval_mode}"
            )
            raise DatasetError(
                f"{transforms} gives no training frames ({how}). List at least one image in train_filenames, "
                "or (without split lists) check --eval-mode / --train-split-fraction of nerfstudio-data."
            )
        if count == 0:
            CONSOLE.print(
                f"[bold yellow]Warning: {escape(str(transforms))} gives no '{split}' frames; evaluation "
                "during training and ns-eval need at least one held-out image.",
                soft_wrap=True,
            )
            return
        if not bool(outputs.cameras.camera_to_worlds.isfinite().all()):
            raise DatasetError(
                f"nerfstudio's pose normalisation of {transforms} produced non-finite camera poses: the "
                "cameras all sit at one position (e.g. a single frame), so they cannot be scaled. Add "
                "views from other positions, or pass `nerfstudio-data --auto-scale-poses False`."
            )
        if not self._reads_files:
            return
        self._check_files(transforms, outputs)
        if self.config.load_3D_points and "ply_file_path" in meta and "points3D_xyz" not in outputs.metadata:
            CONSOLE.print(
                f"[bold yellow]Warning: the seed-point file {escape(str(meta['ply_file_path']))} named in "
                f"{escape(str(transforms))} holds no readable points; training starts from random points.",
                soft_wrap=True,
            )

    def _check_files(self, transforms: Path, outputs: DataparserOutputs) -> None:
        """Every image decodes at its camera's size; masks and depth files decode (each file only once)."""
        images = [Path(p) for p in outputs.image_filenames]
        masks = [Path(p) for p in outputs.mask_filenames] if outputs.mask_filenames else None
        depth_names = outputs.metadata.get("depth_filenames")
        depths = [Path(p) for p in depth_names] if depth_names else None
        widths, heights = outputs.cameras.width.view(-1).tolist(), outputs.cameras.height.view(-1).tolist()
        camera = "its camera in transforms.json (w, h)"
        if (self.downscale_factor or 1) > 1:
            camera += (
                f" divided by the downscale factor {self.downscale_factor} (images_{self.downscale_factor}/)"
            )

        def check(index: int) -> str | None:
            image, expected = images[index], (int(widths[index]), int(heights[index]))
            if image not in self._checked_files:
                problem, size = _image_problem(image, bands=(1, 3, 4))
                if problem is not None:
                    return f"Image {image} {problem}"
                if size != expected:
                    return (
                        f"Image {image} is {size[0]}x{size[1]} pixels but {camera} is "
                        f"{expected[0]}x{expected[1]}. Fix w/h (and fl_x, fl_y, cx, cy) in {transforms} "
                        "or resize the image."
                    )
            if masks is not None and masks[index] not in self._checked_files:
                problem, size = _image_problem(masks[index], bands=(1,))
                if problem is None and size != expected:
                    problem = f"is {size[0]}x{size[1]} pixels but its image is {expected[0]}x{expected[1]}"
                    problem += ". Resize it to its image."
                if problem is not None:
                    return f"Mask {masks[index]} (of {image.name}) {problem}"
            if depths is not None and depths[index] not in self._checked_files:
                problem = _depth_problem(depths[index])
                if problem is not None:
                    return f"Depth file {depths[index]} (of {image.name}) {problem}"
            return None

        problem = _first_failure(check, len(images))
        if problem is not None:
            raise DatasetError(problem)
        self._checked_files.update(images + (masks or []) + (depths or []))


@dataclass
class ValidatedNerfstudioDataParserConfig(NerfstudioDataParserConfig):
    """``nerfstudio-data`` with GenFusion's start-up validation (same options, same outputs)."""

    _target: type = field(default_factory=lambda: ValidatedNerfstudio)
    points_without_ply: Literal["stereo", "none"] = "stereo"
    """Seed points when transforms.json names no ply_file_path and the dataset has no colmap/sparse/0 points (which
    are used when present, as nerfstudio offers to): 'stereo' triangulates them where the training views agree (a
    plane sweep, see genfusion_ns/model/stereo_points.py); 'none' leaves the model's random box."""
