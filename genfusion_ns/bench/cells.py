"""One cell of the bench grid (scene x protocol x method): its folders, its settings and its stored result.

A cell's result file is written last and atomically, so its presence means "finished". A resumed bench skips
finished cells, but only when they were computed with the same settings: a folder holding other results is never
mixed into a new report nor overwritten silently.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genfusion_ns.bench.config import BenchError

CELLS_FOLDER = "cells"


@dataclass(frozen=True)
class Cell:
    scene: str
    protocol: str
    method: str

    @property
    def key(self) -> str:
        return f"{self.scene}__{self.protocol}__{self.method}"

    def run_folder(self, root: Path) -> Path:
        """nerfstudio's ``output_dir`` of the cell's training run."""
        return root / "runs" / self.scene / self.protocol

    def render_folder(self, root: Path) -> Path:
        return root / "renders" / self.scene / self.protocol / self.method

    def result_path(self, root: Path) -> Path:
        return root / CELLS_FOLDER / f"{self.key}.json"


@dataclass
class CellResult:
    """Everything the report shows about one finished (or failed) cell; None is reported as 'n/a'."""

    scene: str
    protocol: str
    method: str
    status: str
    """'done' or 'failed' (a failed cell is computed again by the next invocation)."""
    settings: dict[str, Any]
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    train_seconds: float | None = None
    """Wall time of nerfstudio's training loop (repair rounds included)."""
    repair_seconds: float | None = None
    """Part of the training time spent in repair rounds (fusion methods only)."""
    peak_memory_mib: float | None = None
    peak_memory_kind: str = "n/a"
    num_surfels: int | None = None
    train_views: int | None = None
    test_views: int | None = None
    points_note: str = ""
    config_path: str | None = None
    render_folder: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cell(self) -> Cell:
        return Cell(self.scene, self.protocol, self.method)


def write_result(root: Path, result: CellResult) -> None:
    path = result.cell.result_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(result), indent=2))
    os.replace(temporary, path)  # atomic: an interrupted write leaves no half result


def read_result(root: Path, cell: Cell) -> CellResult | None:
    path = cell.result_path(root)
    if not path.is_file():
        return None
    try:
        return CellResult(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise BenchError(
            f"{path} is not a result of this bench version ({error}); move it away or use another --output."
        ) from error


def finished_result(root: Path, cell: Cell, settings: dict[str, Any]) -> CellResult | None:
    """The stored result of ``cell`` if it finished with these settings; None if it must be computed."""
    stored = read_result(root, cell)
    if stored is None or stored.status != "done":
        return None
    if stored.settings != settings:
        changed = sorted(
            k for k in set(stored.settings) | set(settings) if stored.settings.get(k) != settings.get(k)
        )
        raise BenchError(
            f"{cell.key} in {root} was computed with other settings ({', '.join(changed)}); use "
            "another --output for the new settings, or the same options as before to resume."
        )
    return stored
