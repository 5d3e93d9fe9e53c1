"""GenFusion's masked-input protocol: every training frame shows only a W/2 x H/2 patch of the capture.

The protocol turns a nerfstudio dataset folder into a *new* folder whose ``transforms.json`` adds a per-frame
``mask_path`` (PNG, white = visible; nerfstudio loads it into ``batch["mask"]`` and splatfacto-style models, ours
included, multiply prediction and ground truth by it). The source folder is never modified: its other entries
(images, image pyramids ``images_N``, depths, point clouds, ...) are symlinked (or copied) into the new folder, so
every path inside ``transforms.json`` stays valid and nerfstudio's downscaled-folder lookup keeps working.

Two patch placements:

* ``"corner"`` -- data generation for the video model (supplement B.2): one corner per scene, drawn at random, the
  same for all frames.
* ``"moving"`` -- the reconstruction benchmark (reference notes §6): a bouncing patch path along the sequence with the
  semantics of the authors' ``generate_fixed_step_trajectory``; with viewpoint downsampling ``k`` every k-th frame
  trains (masked) and the rest is held out at full frame.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from . import common

COMMAND = "genfusion-mask-dataset"
PROTOCOL_FILE = common.MASKED_PROTOCOL_FILE
AUTHORS_STEP_RANGE = (5, 30)
"""Random per-move step of the authors' moving patch, in pixels of their 960-pixel-wide images."""
AUTHORS_IMAGE_WIDTH = 960
MAX_PROPOSALS = 1000


class MaskedProtocolError(common.ProtocolError):
    """The source dataset or an option cannot be used; the message says what to change."""


@dataclass
class MaskedProtocolConfig:
    """Write the masked-input variant of a nerfstudio dataset (per-frame W/2 x H/2 visible patch masks)."""

    source: Path
    """nerfstudio dataset folder (with transforms.json); it is only read."""
    output: Path
    """New dataset folder to write (must be empty or absent, or an earlier output of this tool with --overwrite);
    never the source, inside it, or holding it."""
    placement: Literal["corner", "moving"] = "corner"
    """"corner": one random corner per scene for all frames (data generation); "moving": bouncing patch path."""
    downsample: int = 1
    """Viewpoint downsampling: every k-th frame (in file-name order) trains, the others are full-frame eval views.
    With 1, every frame trains and the same views are also the (full-frame) eval views."""
    patch_fraction: float = 0.5
    """Side of the visible patch as a fraction of the image width and height (0.5 = a quarter of the pixels)."""
    seed: int = 0
    """Seed of the corner / the patch path."""
    step_range: tuple[int, int] | None = None
    """Moving patch step range [lo, hi) in pixels; default: the authors' [5, 30) at 960 px, scaled to the width."""
    filter_points: bool = True
    """Keep only the seed points (``ply_file_path``) that project into some training patch, as the authors keep only
    the SfM points seen inside the patches (a projection test: points carry no SfM visibility tracks here)."""
    link_mode: Literal["symlink", "copy"] = "symlink"
    """How the source's files (images, depths, ...) enter the new folder."""
    overwrite: bool = False
    """Replace an earlier genfusion-mask-dataset output in --output (never a folder this tool did not write)."""


@dataclass
class FramePatch:
    """Visible rectangle of one frame at full resolution (``None`` fields: the whole frame is visible)."""

    file_path: str
    mask_path: str
    split: Literal["train", "eval"]
    x: int | None = None
    y: int | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class MaskedDatasetSummary:
    output: Path
    train_files: list[str]
    eval_files: list[str]
    patches: list[FramePatch] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- patch placement


def corner_patch_origin(width: int, height: int, patch_width: int, patch_height: int,
                        rng: np.random.Generator) -> tuple[int, int]:
    """Top-left of a patch in one of the four image corners, chosen uniformly."""
    corner = int(rng.integers(0, 4))
    x = 0 if corner in (0, 2) else width - patch_width
    y = 0 if corner in (0, 1) else height - patch_height
    return x, y


def bouncing_patch_path(num_frames: int, width: int, height: int, patch_width: int, patch_height: int,
                        rng: np.random.Generator, step_range: tuple[int, int]) -> np.ndarray:
    """``[num_frames, 2]`` integer top-lefts of a patch bouncing inside the image (authors' moving mask).

    Start uniform in ``[0, W - w) x [0, H - h)``, direction (+1, +1), integer steps drawn in ``step_range``. A move
    that would leave the range is not emitted: the offending direction component(s) flip (on a single wall the
    other component's direction is redrawn), both steps are redrawn and the move is retried. An axis whose range
    holds a single position stays at 0.
    """
    lo, hi = step_range
    if not 1 <= lo < hi:
        raise MaskedProtocolError(f"step_range must satisfy 1 <= lo < hi, got {step_range}")
    span = np.array([max(width - patch_width, 1), max(height - patch_height, 1)])
    movable = span > 1
    position = np.array([int(rng.integers(0, s)) for s in span])
    direction = np.array([1, 1])

    def draw_steps() -> np.ndarray:
        steps = rng.integers(lo, hi, size=2)
        return np.minimum(steps, np.maximum(span - 1, 1)) * movable  # a step never jumps across the whole range

    steps = draw_steps()
    path = [position.copy()]
    proposals = 0
    while len(path) < num_frames:
        proposal = position + direction * steps
        outside = ((proposal < 0) | (proposal >= span)) & movable
        if not outside.any():
            position = proposal
            path.append(position.copy())
            proposals = 0
            continue
        proposals += 1
        if proposals > MAX_PROPOSALS:
            raise RuntimeError("bouncing patch path did not find a valid move; this is a bug, please report it")
        direction = np.where(outside, -direction, direction)
        if outside.sum() == 1:
            free = int(np.argmin(outside))
            direction[free] = 1 if rng.random() < 0.5 else -1
        steps = draw_steps()
    return np.stack(path).astype(np.int64)


def scaled_step_range(width: int, step_range: tuple[int, int] | None) -> tuple[int, int]:
    """The explicit range, or the authors' [5, 30) at 960 px scaled to ``width`` (at least [1, 2))."""
    if step_range is not None:
        return int(step_range[0]), int(step_range[1])
    scale = width / AUTHORS_IMAGE_WIDTH
    lo = max(1, round(AUTHORS_STEP_RANGE[0] * scale))
    return lo, max(lo + 1, round(AUTHORS_STEP_RANGE[1] * scale))


# ---------------------------------------------------------------------------------------------- dataset writing


def _pyramid_factors(source: Path) -> list[int]:
    """Downscale factors N of the source's ``images_N`` folders (nerfstudio looks for ``masks_N`` next to them)."""
    factors = []
    for entry in source.iterdir():
        if entry.is_dir() and entry.name.startswith("images_") and entry.name[7:].isdigit():
            factors.append(int(entry.name[7:]))
    return sorted(factors)


def _patch_mask(size: tuple[int, int], patch: FramePatch, full_size: tuple[int, int]) -> np.ndarray:
    """Boolean ``[h, w]`` mask of ``patch`` (given at ``full_size``) on an image of ``size``."""
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    if patch.x is None:
        mask[:] = True
        return mask
    sx, sy = width / full_size[0], height / full_size[1]
    x0, y0 = round(patch.x * sx), round(patch.y * sy)
    x1, y1 = round((patch.x + patch.width) * sx), round((patch.y + patch.height) * sy)
    mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = True
    return mask


def _source_mask(source: Path, frame: dict, size: tuple[int, int], factor: int) -> np.ndarray | None:
    """The source's own mask of a frame (at the pyramid level ``factor``), to be combined with the patch."""
    if "mask_path" not in frame:
        return None
    relative = Path(frame["mask_path"])
    path = source / relative if factor == 1 else source / f"{common.MASK_DIR}_{factor}" / relative.name
    if not path.is_file():
        path = source / relative
    with Image.open(path) as image:
        mask = image.convert("L").resize(size, Image.Resampling.NEAREST)
        return np.asarray(mask) > 0


def points_in_patches(points: np.ndarray, meta: dict, frames: list[dict], patches: list[FramePatch]) -> np.ndarray:
    """Boolean ``[N]``: the point lies in front of some training camera and projects inside its patch."""
    keep = np.zeros(len(points), dtype=bool)
    for frame, patch in zip(frames, patches):
        if patch.split != "train" or patch.x is None:
            continue
        u, v, depth = common.project_points(points, meta, frame)
        front = depth > 1e-6
        inside = (u >= patch.x) & (u < patch.x + patch.width) & (v >= patch.y) & (v < patch.y + patch.height)
        keep |= front & inside
    return keep


def _write_filtered_points(source: Path, output: Path, meta: dict, frames: list[dict],
                           patches: list[FramePatch]) -> str | None:
    """Write the seed points seen by the training patches; returns the new ``ply_file_path`` (None: no points)."""
    if "ply_file_path" not in meta:
        return None
    cloud = common.read_point_cloud(source, meta)
    keep = points_in_patches(cloud.points, meta, frames, patches)
    name = "masked_points.ply"
    common.write_point_subset(cloud, keep, output / name)
    return name


def _write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def make_masked_dataset(config: MaskedProtocolConfig) -> MaskedDatasetSummary:
    """Write the masked variant of ``config.source`` into ``config.output``; returns what was written."""
    if config.downsample < 1:
        raise MaskedProtocolError(f"--downsample must be >= 1 (the paper uses 2 or 4), got {config.downsample}")
    if not 0.0 < config.patch_fraction <= 1.0:
        raise MaskedProtocolError(f"--patch-fraction must be in (0, 1], got {config.patch_fraction}")
    source = Path(config.source)
    meta = common.read_transforms(source, MaskedProtocolError)
    with common.protocol_output(config, COMMAND, MaskedProtocolError) as output:
        summary = _write_masked_dataset(config, source, meta, output)
    return replace(summary, output=Path(config.output))


def _write_masked_dataset(config: MaskedProtocolConfig, source: Path, meta: dict,
                          output: Path) -> MaskedDatasetSummary:
    """Write the masked dataset into ``output`` (the staged folder of :func:`make_masked_dataset`)."""
    frames = common.sorted_frames(meta)
    names = [Path(f["file_path"]).stem for f in frames]
    if len(set(names)) != len(names):
        raise MaskedProtocolError("image file names (without folders) must be unique to name the masks.")
    train_ids = list(range(0, len(frames), config.downsample))
    eval_ids = [i for i in range(len(frames)) if i not in set(train_ids)] or list(range(len(frames)))
    sizes = [common.image_size(meta, frame, source) for frame in frames]
    rng = np.random.default_rng(config.seed)

    ref_width, ref_height = sizes[0]
    ref_patch = (max(1, round(ref_width * config.patch_fraction)), max(1, round(ref_height * config.patch_fraction)))
    if config.placement == "corner":
        corner = corner_patch_origin(ref_width, ref_height, *ref_patch, rng)
        origins = np.tile(np.array(corner), (len(frames), 1))
    else:
        step_range = scaled_step_range(ref_width, config.step_range)
        origins = bouncing_patch_path(len(frames), ref_width, ref_height, *ref_patch, rng, step_range)

    patches: list[FramePatch] = []
    train_set = set(train_ids)
    for i, frame in enumerate(frames):
        width, height = sizes[i]
        mask_path = f"{common.MASK_DIR}/{names[i]}.png"
        if i in train_set:
            pw, ph = max(1, round(width * config.patch_fraction)), max(1, round(height * config.patch_fraction))
            # Frames of another size keep the patch's relative position.
            x = round(float(origins[i, 0]) * (width - pw) / max(ref_width - ref_patch[0], 1))
            y = round(float(origins[i, 1]) * (height - ph) / max(ref_height - ref_patch[1], 1))
            patches.append(FramePatch(frame["file_path"], mask_path, "train", x, y, pw, ph))
        else:
            patches.append(FramePatch(frame["file_path"], mask_path, "eval"))

    common.link_source_entries(source, output, config.link_mode, masks=False)
    levels = [(1, common.MASK_DIR)] + [(n, f"{common.MASK_DIR}_{n}") for n in _pyramid_factors(source)]
    new_frames = []
    for frame, patch, size in zip(frames, patches, sizes):
        for factor, folder in levels:
            if factor == 1:
                level_size = size
            else:
                level_image = source / f"images_{factor}" / Path(frame["file_path"]).name
                if not level_image.is_file():
                    continue
                with Image.open(level_image) as image:
                    level_size = image.size
            mask = _patch_mask(level_size, patch, size)
            own = _source_mask(source, frame, level_size, factor)
            if own is not None:
                mask &= own
            _write_mask(output / folder / Path(patch.mask_path).name, mask)
        new_frames.append({**frame, "mask_path": patch.mask_path})

    train_files = [frames[i]["file_path"] for i in train_ids]
    eval_files = [frames[i]["file_path"] for i in eval_ids]
    points_file = _write_filtered_points(source, output, meta, frames, patches) if config.filter_points else None
    if points_file is not None:
        meta = {**meta, "ply_file_path": points_file}
    common.write_split_transforms(output, meta, new_frames, train_files, eval_files)
    record = {"protocol": "genfusion-masked", "source": str(source.resolve()),
              "config": common.config_record(config), "patches": [asdict(p) for p in patches]}
    (output / PROTOCOL_FILE).write_text(json.dumps(record, indent=2))
    return MaskedDatasetSummary(output, train_files, eval_files, patches)
