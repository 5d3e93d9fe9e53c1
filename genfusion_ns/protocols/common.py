"""What the masked and the sparse-view protocols share.

Both read a nerfstudio dataset folder, write a new folder next to it that links (or copies) the source's
entries, project the seed points into the training views to keep the ones they see, and write a split
``transforms.json`` plus a protocol record. One place for each of these, so that the two protocols cannot
drift apart (e.g. one of them writing through a linked file into the source).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from genfusion_ns import point_clouds
from genfusion_ns.errors import UserError
from genfusion_ns.outputs import MARKER, staged_output_folder
from genfusion_ns.point_clouds import PointCloud

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from .masked import MaskedProtocolConfig
    from .sparse_views import SparseProtocolConfig

MASK_DIR = "masks"
"""nerfstudio's mask folder (``masks``, and ``masks_N`` next to the ``images_N`` pyramid)."""
MASKED_PROTOCOL_FILE = "masked_protocol.json"
"""The masked protocol's record: never linked from a source (it tells how the source was made)."""
NOT_LINKED = ("transforms.json", MASKED_PROTOCOL_FILE, MARKER)
"""Source entries an output never links (it writes its own transforms.json and marker)."""
INTRINSICS = ("fl_x", "fl_y", "cx", "cy")
"""Pinhole intrinsics of a frame (per frame, or shared at the top of transforms.json)."""


class ProtocolError(UserError, ValueError):
    """The source dataset, the split or an option of a protocol tool cannot be used; the message says what to
    change."""


# ---------------------------------------------------------------------------------------------- the source


def read_transforms(source: Path, error: type[ProtocolError] = ProtocolError) -> dict:
    """The source's ``transforms.json``; ``error`` (the calling protocol's class) names what is missing."""
    path = source / "transforms.json"
    if not path.is_file():
        raise error(f"{source} is not a nerfstudio dataset folder (no transforms.json); pass the folder that "
                    "holds it.")
    meta = json.loads(path.read_text())
    if not meta.get("frames"):
        raise error(f"{path} lists no frames.")
    return meta


def sorted_frames(meta: dict) -> list[dict]:
    """The frames in file-name order: nerfstudio's, the capture's, and what the authors' split ids index."""
    return sorted(meta["frames"], key=lambda f: str(f["file_path"]))


def image_size(meta: dict, frame: dict, source: Path) -> tuple[int, int]:
    """``(width, height)`` of a frame at full resolution: from transforms.json, else from the image file."""
    width, height = frame.get("w", meta.get("w")), frame.get("h", meta.get("h"))
    if width is None or height is None:
        with Image.open(source / frame["file_path"]) as image:
            return image.size
    return int(width), int(height)


def frame_intrinsics(meta: dict, frame: dict) -> tuple[float, float, float, float]:
    """``fx, fy, cx, cy`` of a frame (a frame's own values override the shared ones)."""
    return tuple(float(frame.get(key, meta.get(key))) for key in INTRINSICS)  # type: ignore[return-value]


def project_points(points: np.ndarray, meta: dict, frame: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates ``u, v`` and camera depth ``z`` of world points ``[N, 3]``.

    ``transform_matrix`` is nerfstudio's OpenGL camera-to-world (x right, y up, looking along -z); distortion
    is ignored (the protocols only test visibility). ``u, v`` are meaningless where ``z`` is not positive.
    """
    fx, fy, cx, cy = frame_intrinsics(meta, frame)
    c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)[:3]
    local = (points - c2w[:, 3]) @ c2w[:, :3]  # world -> camera (OpenGL axes)
    depth = -local[:, 2]
    safe = np.where(depth > 1e-9, depth, 1.0)
    return fx * local[:, 0] / safe + cx, -fy * local[:, 1] / safe + cy, depth


# ---------------------------------------------------------------------------------------------- the output


def protocol_output(config: MaskedProtocolConfig | SparseProtocolConfig, command: str, error: type[Exception],
                    extra_inputs: dict | None = None) -> AbstractContextManager[Path]:
    """The write-then-rename output folder of a protocol tool: ``--output`` must not be, hold (under
    --overwrite) or lie inside the source; it is written next to its final place and renamed when complete."""
    inputs = {"the source dataset": config.source, **(extra_inputs or {})}
    return staged_output_folder(config.output, config.overwrite, command, inputs, error=error)


def is_mask_entry(name: str) -> bool:
    """``masks`` or ``masks_N``: the source's own masks, which the masked protocol replaces by its patches."""
    return name == MASK_DIR or (name.startswith(f"{MASK_DIR}_") and name[len(MASK_DIR) + 1:].isdigit())


def link_entry(entry: Path, target: Path, mode: str) -> None:
    """Make ``entry`` of the source visible at ``target``: a symlink, or a copy (``mode="copy"``)."""
    if mode == "symlink":
        target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    elif entry.is_dir():
        shutil.copytree(entry, target)
    else:
        shutil.copy2(entry, target)


def link_source_entries(source: Path, output: Path, mode: str, masks: bool) -> None:
    """Make the source's entries visible under ``output``, so every path inside transforms.json stays valid.

    Not linked: transforms.json and the marker (the output writes its own), the masked protocol's record and,
    unless ``masks``, the mask folders.
    """
    for entry in sorted(source.iterdir()):
        if entry.name in NOT_LINKED or (not masks and is_mask_entry(entry.name)):
            continue
        link_entry(entry, output / entry.name, mode)


def fresh_path(path: Path) -> Path:
    """``path`` without any link to (or copy of) a source file, so writing it never writes into the source."""
    if path.is_symlink() or path.exists():
        path.unlink()
    return path


def read_point_cloud(source: Path, meta: dict) -> PointCloud:
    """The source's seed points (``ply_file_path``)."""
    try:
        return point_clouds.read_point_cloud(source / meta["ply_file_path"])
    except point_clouds.PointCloudError as error:
        raise ProtocolError(str(error)) from error


def write_point_subset(cloud: PointCloud, keep: np.ndarray, path: Path) -> None:
    """Write the ``keep`` points of ``cloud`` (colours included) as a binary ply at ``path``."""
    point_clouds.write_point_cloud(cloud.subset(keep), fresh_path(path))


def write_split_transforms(output: Path, meta: dict, frames: list[dict], train_files: list[str],
                           eval_files: list[str]) -> None:
    """The new ``transforms.json``: ``ns-train`` uses ``train_files``, ``ns-eval`` scores ``eval_files``."""
    new_meta = {**meta, "frames": frames, "train_filenames": train_files, "val_filenames": eval_files,
                "test_filenames": eval_files}
    fresh_path(output / "transforms.json").write_text(json.dumps(new_meta, indent=2))


def config_record(config: MaskedProtocolConfig | SparseProtocolConfig) -> dict:
    """The options as JSON values (paths as strings), for the protocol record."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
