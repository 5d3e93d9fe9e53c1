"""The bench's protocol names (``sparse-N``, ``masked-K``, ``dense``) and the datasets they prepare.

Every protocol dataset is written by the project's protocol tools (``genfusion_ns.protocols``) into the report
folder; the source dataset is never touched. A finished dataset is reused by a resumed bench; a half-written one
(interrupted) is written again.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genfusion_ns.bench.config import BenchError
from genfusion_ns.point_clouds import read_point_cloud

PROTOCOL_PATTERN = re.compile(r"^(sparse|masked)-([1-9][0-9]*)$|^dense$")
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol name."""

    name: str
    kind: Literal["sparse", "masked", "dense"]
    count: int | None = None
    """Training views (sparse) or viewpoint downsampling factor (masked)."""

    @property
    def fusion_trajectory(self) -> str | None:
        """Novel views of the fusion methods: the training path full-frame for masked inputs (the authors' crop mode),
        the methods' own (ellipse) otherwise."""
        return "crop" if self.kind == "masked" else None


def parse_protocol(name: str) -> Protocol:
    match = PROTOCOL_PATTERN.match(name)
    if match is None:
        raise BenchError(
            f"unknown protocol {name!r}; use sparse-N (e.g. sparse-3), masked-K (masked-2, masked-4) "
            "or dense."
        )
    if name == "dense":
        return Protocol(name, "dense")
    return Protocol(name, match.group(1), int(match.group(2)))  # type: ignore[arg-type]


@dataclass
class PreparedDataset:
    """A protocol dataset ready for ``ns-train`` and ``ns-eval``."""

    path: Path
    train_views: int
    test_views: int
    points_note: str
    """How the seed points were chosen (for the report)."""


def _dense_split_file(source: Path, folder: Path) -> Path | None:
    """Without split lists in the source, the usual dense hold-out (every 8th view) written as an authors' split."""
    from genfusion_ns.scenes.dataset import split_indices

    meta = json.loads((source / "transforms.json").read_text())
    if "train_filenames" in meta and "test_filenames" in meta:
        return None
    train, test = split_indices(len(meta.get("frames", [])), "all")
    path = folder / "dense_split.json"
    path.write_text(json.dumps({"train_ids": train, "test_ids": test}))
    return path


def _write(protocol: Protocol, source: Path, output: Path, seed: int, depth_tolerance: float) -> None:
    from genfusion_ns.protocols.masked import MaskedProtocolConfig, make_masked_dataset
    from genfusion_ns.protocols.sparse_views import SparseProtocolConfig, make_sparse_dataset

    if protocol.kind == "masked":
        make_masked_dataset(
            MaskedProtocolConfig(
                source=source, output=output, placement="moving", downsample=protocol.count or 1, seed=seed
            )
        )
        return
    if protocol.kind == "sparse":
        authors_split = source / f"train_test_split_{protocol.count}.json"
        split_file = authors_split if authors_split.is_file() else None
        train_views = None if split_file is not None else protocol.count
    else:
        split_file = _dense_split_file(source, output.parent)
        train_views = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes are in the protocol record, which the report reads
        make_sparse_dataset(
            SparseProtocolConfig(
                source=source,
                output=output,
                split_file=split_file,
                train_views=train_views,
                depth_tolerance=depth_tolerance,
            )
        )


def _count_points(ply: Path) -> int:
    return len(read_point_cloud(ply))


def _summarise(path: Path) -> PreparedDataset:
    meta = json.loads((path / "transforms.json").read_text())
    sparse_record = path / "sparse_protocol.json"
    if sparse_record.is_file():
        points = json.loads(sparse_record.read_text())["points"]
        if points.get("num_points") is None:
            note = "no seed points (random init)"
        elif points["points_from_all_views"]:
            note = f"{points['num_points']} points from ALL views (not restricted)"
        else:
            note = (
                f"{points['num_points']}/{points['num_source_points']} points seen by training views "
                f"({points['visibility_test']})"
            )
    elif "ply_file_path" in meta:
        note = f"{_count_points(path / meta['ply_file_path'])} points inside the training patches (masked)"
    else:
        note = "no seed points (random init)"
    return PreparedDataset(path, len(meta["train_filenames"]), len(meta["test_filenames"]), note)


def prepare_dataset(
    protocol: Protocol, source: Path, folder: Path, seed: int, depth_tolerance: float
) -> PreparedDataset:
    """The protocol dataset of ``source`` under ``folder``; written once (atomically), then reused."""
    final = folder / protocol.name
    if (final / "transforms.json").is_file():
        return _summarise(final)
    partial = folder / f"{protocol.name}{PARTIAL_SUFFIX}"
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted earlier preparation: the bench's own scratch folder
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _write(protocol, source, partial, seed, depth_tolerance)
    except ValueError as error:  # the protocol tools' errors say what to change
        shutil.rmtree(partial, ignore_errors=True)
        raise BenchError(f"protocol {protocol.name} on {source}: {error}") from error
    # The sparse tool records the folder it wrote; point it at the final name.
    for record_name in ("sparse_protocol.json", "masked_protocol.json"):
        record = partial / record_name
        if record.is_file() and not record.is_symlink():
            content = json.loads(record.read_text())
            content.setdefault("config", {})["output"] = str(final)
            record.write_text(json.dumps(content, indent=2))
    partial.rename(final)
    return _summarise(final)
