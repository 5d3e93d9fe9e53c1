"""GenFusion's sparse-view protocol: train on a few listed views, evaluate the held-out ones at full frame.

Like the masked protocol (``masked.py``), it turns a nerfstudio dataset folder into a *new* folder: the source is only
read, its entries are symlinked (or copied) into the new folder, and the new ``transforms.json`` carries
``train_filenames`` (the sparse views) and ``val_filenames`` / ``test_filenames`` (the held-out views), so
``ns-train`` uses only the sparse views and ``ns-eval`` scores the held-out ones.

The split comes from the authors' ``train_test_split_{N}.json`` (``train_ids`` / ``test_ids`` index the file-name
sorted frames), from a JSON with nerfstudio split lists, from the source's own split lists, or is N views spread
evenly along the sequence. The seed points are restricted to what the training views see (reference notes §2.3: the
authors keep only SfM points whose track contains a training image): a point counts as seen by a view if it projects
inside the image in front of the camera and -- when the dataset has depth maps -- is not behind the surface the view
saw there. Without depth maps only the frustum test is possible, and the protocol record says so.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import tyro
from PIL import Image

from genfusion_ns.outputs import exit_with_error

from . import common

COMMAND = "genfusion-sparse-split"
PROTOCOL_FILE = "sparse_protocol.json"
FILTERED_PLY = "sparse_view_points.ply"
NERFSTUDIO_DEPTH_UNIT_SCALE = 1e-3
"""nerfstudio's default ``depth_unit_scale_factor`` (millimetre depth PNGs)."""
PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "PERSPECTIVE")
"""Camera models whose projection a pinhole test handles (OPENCV's distortion is ignored: a visibility test)."""


class SparseProtocolError(common.ProtocolError):
    """The source dataset, the split or an option cannot be used; the message says what to change."""


@dataclass
class SparseProtocolConfig:
    """Write the sparse-view variant of a nerfstudio dataset (listed training views, held-out evaluation views)."""

    source: tyro.conf.Positional[Path]
    """nerfstudio dataset folder (with transforms.json); it is only read."""
    output: Path
    """New dataset folder to write (must be empty or absent, or an earlier output of this tool with --overwrite);
    never the source, inside it, or holding it."""
    split_file: Path | None = None
    """JSON with ``train_ids``/``test_ids`` (authors' ``train_test_split_{N}.json``, indices into the file-name
    sorted frames) or with ``train_filenames``/``test_filenames`` (nerfstudio lists). Without it (and without
    --train-views) the source transforms.json's own split lists are used."""
    train_views: int | None = None
    """Instead of a split file: N training views spread evenly along the sorted frames, every other frame held out."""
    filter_points: bool = True
    """Keep only the seed points (``ply_file_path``) seen by some training view. Off: all points stay and the
    protocol record flags that they came from all views."""
    depth_tolerance: float = 0.05
    """Occlusion test: a point is hidden from a view if it lies more than this fraction behind the view's depth."""
    depth_unit_scale_factor: float | None = None
    """Metres (transform units) per stored depth unit; default: transforms.json's value, else nerfstudio's 1e-3."""
    link_mode: Literal["symlink", "copy"] = "symlink"
    """How the source's files (images, depths, masks, ...) enter the new folder."""
    overwrite: bool = False
    """Replace an earlier genfusion-sparse-split output in --output (never a folder this tool did not write)."""


@dataclass
class SparseSplit:
    """Training and held-out frame indices into the file-name sorted frames, and where they came from."""

    train_ids: list[int]
    test_ids: list[int]
    origin: str


@dataclass
class PointVisibility:
    """Which seed points the training views see, and how that was decided."""

    seen: np.ndarray
    """Boolean ``[N]``."""
    depth_tested: bool
    """True when every training view had a depth map for the occlusion test."""


@dataclass
class SparseDatasetSummary:
    output: Path
    train_files: list[str]
    test_files: list[str]
    num_source_points: int | None
    """Points in the source ply (None: the source has no ``ply_file_path``)."""
    num_points: int | None
    """Points written to the new dataset."""
    points_from_all_views: bool
    """True when the seed points were not restricted at all (disabled, or not a pinhole dataset)."""
    depth_tested: bool
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- splits


def _normalise(file_path: str) -> str:
    return str(PurePosixPath(str(file_path).replace("\\", "/"))).removeprefix("./")


def split_from_ids(train_ids: list[int], test_ids: list[int], num_frames: int, origin: str) -> SparseSplit:
    """Validate integer ids (range, duplicates, disjoint sets) and keep them sorted."""
    for name, ids in (("train_ids", train_ids), ("test_ids", test_ids)):
        if not ids:
            raise SparseProtocolError(f"{origin}: {name} is empty; list at least one frame index.")
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise SparseProtocolError(f"{origin}: {name} must be integer frame indices, got {ids!r}.")
        bad = [i for i in ids if not 0 <= i < num_frames]
        if bad:
            raise SparseProtocolError(
                f"{origin}: {name} {bad} are outside 0..{num_frames - 1} (the dataset has "
                f"{num_frames} frames, indexed in file-name order)."
            )
        if len(set(ids)) != len(ids):
            raise SparseProtocolError(f"{origin}: {name} lists a frame twice.")
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise SparseProtocolError(
            f"{origin}: frames {overlap} are both training and held-out views; the protocol "
            "evaluates held-out views only, so the two lists must be disjoint."
        )
    return SparseSplit(sorted(int(i) for i in train_ids), sorted(int(i) for i in test_ids), origin)


def split_from_filenames(
    train_files: list[str], test_files: list[str], frame_files: list[str], origin: str
) -> SparseSplit:
    """Map nerfstudio split lists (``file_path`` values) onto frame indices."""
    index = {_normalise(f): i for i, f in enumerate(frame_files)}

    def ids(files: list[str], name: str) -> list[int]:
        missing = [f for f in files if _normalise(f) not in index]
        if missing:
            raise SparseProtocolError(
                f"{origin}: {name} {missing[:3]} are not frames of the dataset (frame paths "
                f"look like {frame_files[0]!r})."
            )
        return [index[_normalise(f)] for f in files]

    return split_from_ids(
        ids(train_files, "train_filenames"), ids(test_files, "test_filenames"), len(frame_files), origin
    )


def evenly_spaced_split(num_frames: int, train_views: int) -> SparseSplit:
    """``train_views`` frames spread along the sequence (the scene generator's sparse rule), the rest held out."""
    from genfusion_ns.scenes.dataset import split_indices

    if not 1 <= train_views < num_frames:
        raise SparseProtocolError(
            f"--train-views must be between 1 and {num_frames - 1} for {num_frames} frames, "
            f"got {train_views}."
        )
    train, test = split_indices(num_frames, train_views)
    return split_from_ids(train, test, num_frames, f"{train_views} evenly spaced views")


def read_split(config: SparseProtocolConfig, meta: dict, frame_files: list[str]) -> SparseSplit:
    """The split the options ask for (split file, evenly spaced views, or the source's own lists)."""
    if config.split_file is not None and config.train_views is not None:
        raise SparseProtocolError("pass either --split-file or --train-views, not both.")
    if config.train_views is not None:
        return evenly_spaced_split(len(frame_files), config.train_views)
    if config.split_file is not None:
        path = Path(config.split_file)
        if not path.is_file():
            raise SparseProtocolError(f"--split-file {path} does not exist.")
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SparseProtocolError(f"--split-file {path} is not valid JSON ({error}).") from error
        if isinstance(content, dict) and "train_ids" in content and "test_ids" in content:
            return split_from_ids(
                list(content["train_ids"]), list(content["test_ids"]), len(frame_files), str(path)
            )
        if isinstance(content, dict) and "train_filenames" in content and "test_filenames" in content:
            return split_from_filenames(
                content["train_filenames"], content["test_filenames"], frame_files, str(path)
            )
        raise SparseProtocolError(
            f"--split-file {path} needs 'train_ids' and 'test_ids' (authors' format) or "
            "'train_filenames' and 'test_filenames' (nerfstudio lists)."
        )
    if "train_filenames" in meta and "test_filenames" in meta:
        return split_from_filenames(
            meta["train_filenames"],
            meta["test_filenames"],
            frame_files,
            "the source transforms.json's split lists",
        )
    raise SparseProtocolError(
        "no split given: pass --split-file (e.g. SOURCE/train_test_split_6.json) or "
        "--train-views N; the source transforms.json has no train/test_filenames lists."
    )


# ---------------------------------------------------------------------------------------------- visibility


def load_depth_map(path: Path, unit_scale: float) -> np.ndarray:
    """Depth in transform units (nerfstudio's z-depth files: ``.npy`` or 16-bit PNG); 0 marks 'no measurement'."""
    if path.suffix == ".npy":
        depth = np.load(path).astype(np.float64)
    else:
        with Image.open(path) as image:
            depth = np.asarray(image).astype(np.float64)
    if depth.ndim == 3:
        depth = depth[..., 0]
    return depth * unit_scale


def points_seen_by_views(
    points: np.ndarray,
    meta: dict,
    frames: list[dict],
    view_ids: list[int],
    source: Path,
    depth_tolerance: float,
    depth_unit_scale: float,
) -> PointVisibility:
    """Which points some view in ``view_ids`` sees: in front, inside the image, and not occluded where depth exists.

    The occlusion test looks up the view's depth at the point's pixel (nearest pixel, depth map resized by pixel
    scaling): the point is hidden if it lies more than ``depth_tolerance`` (relative) behind that depth. Pixels without
    a measurement (depth 0) cannot hide anything.
    """
    seen = np.zeros(len(points), dtype=bool)
    depth_tested = True
    for i in view_ids:
        frame = frames[i]
        width, height = common.image_size(meta, frame, source)
        u, v, z = common.project_points(points, meta, frame)
        visible = (z > 1e-6) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        if "depth_file_path" in frame:
            depth = load_depth_map(source / frame["depth_file_path"], depth_unit_scale)
            rows = np.clip((v[visible] * depth.shape[0] / height).astype(np.int64), 0, depth.shape[0] - 1)
            cols = np.clip((u[visible] * depth.shape[1] / width).astype(np.int64), 0, depth.shape[1] - 1)
            measured = depth[rows, cols]
            unoccluded = (measured <= 0) | (z[visible] <= measured * (1.0 + depth_tolerance))
            visible[np.flatnonzero(visible)[~unoccluded]] = False
        else:
            depth_tested = False
        seen |= visible
    return PointVisibility(seen, depth_tested)


def restriction_obstacle(meta: dict, frames: list[dict]) -> str | None:
    """Why the seed points cannot be projected into the views (None: they can)."""
    models = {str(frame.get("camera_model", meta.get("camera_model", "OPENCV"))).upper() for frame in frames}
    unsupported = sorted(models - set(PINHOLE_MODELS))
    if unsupported:
        return f"camera model {', '.join(unsupported)} is not a pinhole projection"
    if any(frame.get(k, meta.get(k)) is None for frame in frames for k in common.INTRINSICS):
        return "some frames lack pinhole intrinsics (fl_x, fl_y, cx, cy)"
    return None


# ---------------------------------------------------------------------------------------------- dataset writing


def _depth_unit_scale(config: SparseProtocolConfig, meta: dict) -> float:
    if config.depth_unit_scale_factor is not None:
        return float(config.depth_unit_scale_factor)
    return float(meta.get("depth_unit_scale_factor", NERFSTUDIO_DEPTH_UNIT_SCALE))


def make_sparse_dataset(config: SparseProtocolConfig) -> SparseDatasetSummary:
    """Write the sparse-view variant of ``config.source`` into ``config.output``; returns what was written."""
    if config.depth_tolerance < 0:
        raise SparseProtocolError(f"--depth-tolerance must be >= 0, got {config.depth_tolerance}")
    config = replace(config, source=Path(config.source), output=Path(config.output))
    source = config.source
    meta = common.read_transforms(source, SparseProtocolError)
    frames = common.sorted_frames(meta)
    frame_files = [str(f["file_path"]) for f in frames]
    split = read_split(config, meta, frame_files)
    # After validation, so a bad split creates nothing; written next to --output and renamed when complete.
    inputs = {"--split-file": config.split_file}
    with common.protocol_output(config, COMMAND, SparseProtocolError, inputs) as output:
        summary = _write_sparse_dataset(config, meta, frames, frame_files, split, output)
    return replace(summary, output=config.output)


def _write_sparse_dataset(config: SparseProtocolConfig, meta: dict, frames: list[dict], frame_files: list[str],
                          split: SparseSplit, output: Path) -> SparseDatasetSummary:
    """Write the sparse-view dataset into ``output`` (the staged folder of :func:`make_sparse_dataset`)."""
    source = config.source
    common.link_source_entries(source, output, config.link_mode, masks=True)  # the source's masks stay valid

    notes: list[str] = []
    points_record: dict = {"source_ply": meta.get("ply_file_path"), "filter_requested": config.filter_points}
    num_source, num_points, all_views, depth_tested = None, None, False, False
    if "ply_file_path" not in meta:
        notes.append("the source has no ply_file_path: nerfstudio methods start from random points.")
    else:
        cloud = common.read_point_cloud(source, meta)
        points = cloud.points
        num_source = len(points)
        obstacle = None if config.filter_points else "disabled with --no-filter-points"
        obstacle = obstacle or restriction_obstacle(meta, frames)
        if obstacle is not None:
            all_views, num_points = True, num_source
            notes.append(
                f"seed points NOT restricted to the training views ({obstacle}): they came from all views."
            )
        else:
            visibility = points_seen_by_views(
                points,
                meta,
                frames,
                split.train_ids,
                source,
                config.depth_tolerance,
                _depth_unit_scale(config, meta),
            )
            depth_tested = visibility.depth_tested
            if not depth_tested:
                notes.append(
                    "some training views have no depth map: points were kept by the frustum test only "
                    "(occluded points seen by no training view may remain)."
                )
            keep = visibility.seen
            common.write_point_subset(cloud, keep, output / FILTERED_PLY)
            meta = {**meta, "ply_file_path": FILTERED_PLY}
            num_points = int(keep.sum())
            if num_points == 0:
                notes.append("no seed point is seen by the training views: the filtered ply is empty.")
        points_record.update(
            {
                "ply_file_path": meta["ply_file_path"],
                "num_source_points": num_source,
                "num_points": num_points,
                "points_from_all_views": all_views,
                "visibility_test": None if all_views else ("frustum+depth" if depth_tested else "frustum"),
                "depth_tolerance": None if all_views else config.depth_tolerance,
            }
        )
    for note in notes:
        warnings.warn(f"{COMMAND}: {note}", stacklevel=3)

    train_files = [frame_files[i] for i in split.train_ids]
    test_files = [frame_files[i] for i in split.test_ids]
    common.write_split_transforms(output, meta, frames, train_files, test_files)
    record = {
        "protocol": "genfusion-sparse-views",
        "source": str(source.resolve()),
        "config": common.config_record(config),
        "split": {
            "origin": split.origin,
            "train_ids": split.train_ids,
            "test_ids": split.test_ids,
            "train_filenames": train_files,
            "test_filenames": test_files,
        },
        "points": points_record,
        "depth_tested": depth_tested,
        "points_from_all_views": all_views,
        "notes": notes,
    }
    common.fresh_path(output / PROTOCOL_FILE).write_text(json.dumps(record, indent=2))
    return SparseDatasetSummary(
        output, train_files, test_files, num_source, num_points, all_views, depth_tested, notes
    )


def entrypoint() -> None:
    """``genfusion-sparse-split SOURCE --split-file ... --output ...``."""
    from rich.console import Console

    console = Console()
    config = tyro.cli(SparseProtocolConfig, description=SparseProtocolConfig.__doc__)
    try:
        with warnings.catch_warnings(record=True):  # the notes are printed below, once
            warnings.simplefilter("always")
            summary = make_sparse_dataset(config)
    except common.ProtocolError as error:
        exit_with_error(COMMAND, error)
    points = (
        "no seed points"
        if summary.num_points is None
        else f"{summary.num_points} of {summary.num_source_points} seed points"
    )
    console.print(
        f"Wrote {summary.output}: {len(summary.train_files)} training views, {len(summary.test_files)} "
        f"held-out views, {points}.",
        highlight=False,
        soft_wrap=True,
    )
    for note in summary.warnings:
        console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)


if __name__ == "__main__":
    entrypoint()
