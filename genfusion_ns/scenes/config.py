"""Configuration of a generated scene, validated up front so bad options fail with one clear sentence."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from genfusion_ns.outputs import check_output_folder

COMMAND = "genfusion-scene"
MIN_IMAGE_SIDE = 3
"""Smallest image side that trains with every GenFusion method: at 1 px the SSIM loss gets a collapsed image, at
2 px the fusion methods' repair crop (the video model's aspect ratio) is 1 px high; 3 px trains them all. Metrics
such as LPIPS (AlexNet) need 31 px or more."""
MAX_IMAGE_SIDE = 4096


class SceneConfigError(ValueError):
    """An option of ``genfusion-scene`` is invalid; the message says which and what to do."""


@dataclass
class SceneConfig:
    """Procedurally generate a multi-view scene as a nerfstudio dataset (`nerfstudio-data` reads it unchanged)."""

    out: Path = Path("data/genfusion-scene")
    """Output folder of the dataset (created; must be empty or absent, or an earlier genfusion-scene output with
    --overwrite)."""
    seed: int = 0
    """Random seed: the same seed gives byte-identical files."""
    views: int = 24
    """Total number of rendered views."""
    train_views: Union[int, Literal["all"]] = 3
    """Number of training views (sparse splits: 3, 6, 9, ...), or "all" (every view but each 8th, held out)."""
    resolution: int = 96
    """Image height in pixels (at least 3, the smallest size that trains; 32 or more for LPIPS)."""
    aspect: float = 1.0
    """Width / height."""
    kind: Literal["room", "object", "street"] = "room"
    """Indoor room with textured walls and several objects, an object-centric scene, or a street between building
    blocks (walking captures)."""
    textures: Literal["procedural", "photo"] = "procedural"
    """Surface textures: procedural patterns, or tiled crops of the CC0 / public-domain photos shipped with
    scikit-image (closer to real captures; see genfusion_ns/scenes/photos.py)."""
    path: Optional[Literal["orbit", "arc", "walk"]] = None
    """Camera path: "orbit" (full circle around the scene centre), "arc" (forward-facing) or "walk" (forward along a
    street; the only path of --kind street); default: walk for streets, orbit otherwise."""
    fov_degrees: float = 60.0
    """Vertical field of view."""
    supersample: int = 2
    """Sub-pixel rays per axis for anti-aliased colour."""
    points_per_view: int = 800
    """Seed points sampled from each training view's visible surface (before de-duplication)."""
    point_noise: float = 0.01
    """Standard deviation of the seed points' position noise, in metres."""
    overwrite: bool = False
    """Replace an earlier genfusion-scene output in --out (never a folder this command did not write)."""

    @property
    def width(self) -> int:
        return max(1, round(self.resolution * self.aspect))

    @property
    def camera_path(self) -> str:
        return self.path or ("walk" if self.kind == "street" else "orbit")

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
        if self.camera_path == "walk" and self.kind != "street":
            raise SceneConfigError(f"--path walk needs --kind street (a {self.kind} has no street to walk along); "
                                   "use --path orbit or arc.")
        if self.kind == "street" and self.camera_path != "walk":
            raise SceneConfigError(f"--kind street is captured walking (--path walk); --path {self.camera_path} "
                                   "would put cameras inside its buildings.")
        if not MIN_IMAGE_SIDE <= self.resolution <= MAX_IMAGE_SIDE:
            raise SceneConfigError(
                f"--resolution must be between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE} pixels (got {self.resolution}): "
                f"smaller images cannot be trained; use {MIN_IMAGE_SIDE} or more (32 or more to get LPIPS too).")
        if not 0.1 <= self.aspect <= 10:
            raise SceneConfigError(f"--aspect must be between 0.1 and 10 (got {self.aspect}).")
        if not MIN_IMAGE_SIDE <= self.width <= MAX_IMAGE_SIDE:
            raise SceneConfigError(
                f"--aspect {self.aspect} at --resolution {self.resolution} makes images {self.width} px wide; the "
                f"width must be between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE} pixels to train: change --resolution "
                "or --aspect.")
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
        check_output_folder(out, self.overwrite, COMMAND, flag="--out", error=SceneConfigError)
        # The dataset is written next to --out, then renamed into place: the folder holding --out must be writable.
        parent = next((p for p in out.expanduser().resolve().parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise SceneConfigError(f"--out {out} is not writable: {parent} is a file, not a folder; choose another path.")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise SceneConfigError(f"--out {out} is not writable (no write permission on {parent}); choose another path.")
