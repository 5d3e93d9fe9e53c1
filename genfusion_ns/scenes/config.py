"""Configuration of a generated scene, validated up front so bad options fail with one clear sentence."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union


class SceneConfigError(ValueError):
    """An option of ``genfusion-scene`` is invalid; the message says which and what to do."""


@dataclass
class SceneConfig:
    """Procedurally generate a multi-view scene as a nerfstudio dataset (`nerfstudio-data` reads it unchanged)."""

    out: Path = Path("data/genfusion-scene")
    """Output folder of the dataset (created; must be empty or absent unless --overwrite)."""
    seed: int = 0
    """Random seed: the same seed gives byte-identical files."""
    views: int = 24
    """Total number of rendered views."""
    train_views: Union[int, Literal["all"]] = 3
    """Number of training views (sparse splits: 3, 6, 9, ...), or "all" (every view but each 8th, held out)."""
    resolution: int = 96
    """Image height in pixels."""
    aspect: float = 1.0
    """Width / height."""
    kind: Literal["room", "object"] = "room"
    """Indoor room with textured walls and several objects, or an object-centric scene."""
    path: Optional[Literal["orbit", "arc"]] = None
    """Camera path: "orbit" (full circle around the scene centre) or "arc" (forward-facing); default: orbit."""
    fov_degrees: float = 60.0
    """Vertical field of view."""
    supersample: int = 2
    """Sub-pixel rays per axis for anti-aliased colour."""
    points_per_view: int = 800
    """Seed points sampled from each training view's visible surface (before de-duplication)."""
    point_noise: float = 0.01
    """Standard deviation of the seed points' position noise, in metres."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""

    @property
    def width(self) -> int:
        return max(1, round(self.resolution * self.aspect))

    @property
    def camera_path(self) -> str:
        return self.path or "orbit"

    def validate(self) -> None:
        if self.views < 2:
            raise SceneConfigError(f"--views must be at least 2 (got {self.views}).")
        if self.train_views != "all":
            k = int(self.train_views)
            if k < 1:
                raise SceneConfigError(f"--train-views must be at least 1 or 'all' (got {k}).")
            if k >= self.views:
                raise SceneConfigError(
                    f"--train-views ({k}) must be smaller than --views ({self.views}) so that some views are held out "
                    "for evaluation; raise --views or use --train-views all.")
        if self.resolution < 1 or self.resolution > 4096:
            raise SceneConfigError(f"--resolution must be between 1 and 4096 pixels (got {self.resolution}).")
        if not 0.1 <= self.aspect <= 10:
            raise SceneConfigError(f"--aspect must be between 0.1 and 10 (got {self.aspect}).")
        if not 1.0 <= self.fov_degrees <= 150.0:
            raise SceneConfigError(f"--fov-degrees must be between 1 and 150 (got {self.fov_degrees}).")
        if self.supersample < 1:
            raise SceneConfigError(f"--supersample must be at least 1 (got {self.supersample}).")
        if self.points_per_view < 1:
            raise SceneConfigError(f"--points-per-view must be at least 1 (got {self.points_per_view}).")
        if self.point_noise < 0:
            raise SceneConfigError(f"--point-noise must be >= 0 (got {self.point_noise}).")
        self._validate_out()

    def _validate_out(self) -> None:
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise SceneConfigError(f"--out {out} exists and is not a folder; choose another path.")
        if out.is_dir() and any(out.iterdir()) and not self.overwrite:
            raise SceneConfigError(
                f"--out {out} already contains files; choose an empty folder or pass --overwrite to replace it.")
        parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise SceneConfigError(f"--out {out} is not writable: {parent} is a file, not a folder; choose another path.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise SceneConfigError(f"--out {out} is not writable (no write permission on {parent}); choose another path.")
