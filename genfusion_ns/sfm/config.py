"""Options of ``genfusion-process-photos``; the defaults are the settings that registered every lund photo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

COMMAND = "genfusion-process-photos"

CameraModelName = Literal["SIMPLE_RADIAL", "OPENCV", "RADIAL", "PINHOLE", "SIMPLE_PINHOLE"]
"""COLMAP camera models nerfstudio's converter turns into its ``OPENCV`` model
(``parse_colmap_camera_params``)."""


@dataclass
class ProcessPhotosConfig:
    """Turn a folder of photos into a nerfstudio dataset (what `ns-process-data images` writes), with
    pycolmap.

    Writes images/ (the photos, renamed frame_00001.jpg, ...), images_2/ images_4/ images_8/, transforms.json
    (poses and the estimated camera), sparse_pc.ply (the coloured structure-from-motion points) and colmap/
    (database.db, sparse/0 = the model used, sparse/1... = smaller models left out). Needs pycolmap:
    pip install -e ".[sfm]".
    """

    photos: tyro.conf.Positional[Path]
    """Folder of photos (.jpg, .jpeg, .png, .tif, .tiff; sub-folders included, sorted by path). Never
    modified."""
    output: Path
    """Dataset folder to write (absent, empty, or an earlier output of this command with --overwrite)."""
    overwrite: bool = False
    """Replace an earlier genfusion-process-photos output in --output (never a folder it did not write)."""
    matching: Literal["sequential", "exhaustive"] = "sequential"
    """Which photo pairs are matched: "sequential" (each photo with the next --overlap ones in file order; for
    walks and video-like captures, and far faster) or "exhaustive" (every pair; for unordered photo sets)."""
    overlap: int = 10
    """Sequential matching: how many following photos each photo is matched with."""
    camera_model: CameraModelName = "SIMPLE_RADIAL"
    """COLMAP camera model. SIMPLE_RADIAL (one focal length, one radial term) is well determined even for
    narrow, forward-moving captures; OPENCV (ns-process-data's default) adds fx != fy and three more
    distortion terms."""
    single_camera: bool = True
    """One camera shared by every photo (one phone, no zoom), which SfM estimates from all of them at once.
    Photos of different sizes get one camera per size."""
    max_image_size: int = 1600
    """Features are extracted on photos scaled down to this long side (faster; poses are still
    full-resolution)."""
    max_num_features: int = 8192
    """SIFT features per photo at most."""
    init_min_num_inliers: int = 50
    """Incremental mapping: verified matches the first photo pair needs (COLMAP's default 100)."""
    init_min_tri_angle: float = 4.0
    """Incremental mapping: triangulation angle (degrees) the first pair needs (COLMAP's default 16, which a
    forward walk with a narrow field of view rarely reaches)."""
    init_max_forward_motion: float = 1.0
    """Incremental mapping: largest share of forward motion allowed in the first pair (COLMAP's default 0.95
    rejects the pairs of a forward walk; 1.0 allows them)."""
    abs_pose_min_num_inliers: int = 15
    """Incremental mapping: 2D-3D inliers a photo needs to be added (COLMAP's default 30)."""
    mapping_attempts: int = 3
    """While photos are left out, incremental mapping runs again with the next seed (same features and
    matches, seconds each); the run with the most photos is kept."""
    num_downscales: int = 3
    """images_2/, images_4/, ... folders to write (3: down to images_8/, like ns-process-data)."""
    num_threads: int = -1
    """CPU threads for pycolmap (-1: all)."""
    seed: int = 0
    """Random seed of pycolmap's RANSAC and mapper (-1: random); with several threads results can still
    vary."""
    verbose: bool = False
    """Show pycolmap's own log."""
