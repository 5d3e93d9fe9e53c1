"""Writes a rendered scene as a standard nerfstudio dataset.

Files: ``images/frame_XXXXX.png``; ``depths/frame_XXXXX.png`` (16-bit z-depth in millimetres, so
``depth_unit_scale_factor`` = 1e-3, nerfstudio's default); ``transforms.json`` (shared intrinsics, OpenGL
camera-to-world ``transform_matrix``, ``train_filenames`` / ``val_filenames`` / ``test_filenames``,
``ply_file_path``); ``sparse_points.ply`` (noisy surface points seen by the *training* views, like a sparse SfM
cloud); the authors' split file ``train_test_split_{N}.json`` (``train_ids`` / ``test_ids`` index the name-sorted
frames); ``scene.json`` (the generator settings, for provenance).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from .cameras import PinholeCameras

DEPTH_UNIT_SCALE = 1e-3  # metres per stored depth unit (millimetre PNGs)


def frame_name(index: int) -> str:
    return f"frame_{index:05d}.png"


def split_indices(views: int, train_views: int | str) -> tuple[list[int], list[int]]:
    """Training and held-out view indices.

    Sparse (an integer k): k views spread evenly along the path for training, every other view held out.
    ``"all"``: every 8th view (0, 8, ...) held out, the rest trains (the usual dense hold-out).
    """
    if train_views == "all":
        test = list(range(0, views, 8))
        return [i for i in range(views) if i not in test], test
    k = int(train_views)
    train = sorted({int(round(x)) for x in np.linspace(0, views, k, endpoint=False)})
    return train, [i for i in range(views) if i not in train]


def write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)).save(path)


def write_png_depth(path: Path, depth_m: np.ndarray) -> None:
    Image.fromarray(np.clip(np.round(depth_m / DEPTH_UNIT_SCALE), 0, 65535).astype(np.uint16)).save(path)


def write_ply(path: Path, xyz: np.ndarray, rgb_uint8: np.ndarray) -> None:
    """ASCII PLY with float xyz and uchar colours (what nerfstudio's COLMAP converter writes too)."""
    header = "\n".join([
        "ply", "format ascii 1.0", f"element vertex {len(xyz)}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue", "end_header",
    ])
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb_uint8)]
    path.write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))


def sample_seed_points(cameras: PinholeCameras, depths: list[np.ndarray], images: list[np.ndarray],
                       train: list[int], per_view: int, noise: float, rng: np.random.Generator
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Back-project random valid pixels of the training views only, then jitter them like SfM triangulation noise."""
    xyz, rgb = [], []
    for index in train:
        depth = depths[index]
        vs, us = np.nonzero(depth > 0)
        if len(vs) == 0:
            continue
        pick = rng.choice(len(vs), size=min(per_view, len(vs)), replace=False)
        v, u, z = vs[pick], us[pick], depth[vs[pick], us[pick]]
        cam = np.stack([(u + 0.5 - cameras.cx) / cameras.fx * z, (v + 0.5 - cameras.cy) / cameras.fy * z, z], -1)
        c2w = cameras.c2w_opencv[index]
        xyz.append(cam @ c2w[:3, :3].T + c2w[:3, 3])
        rgb.append(images[index][v, u])
    if not xyz:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    points = np.concatenate(xyz)
    points = points + rng.normal(scale=noise, size=points.shape)
    colors = np.clip(np.concatenate(rgb) + rng.normal(scale=0.02, size=points.shape), 0.0, 1.0)
    return points, np.round(colors * 255.0).astype(np.uint8)


def write_dataset(out: Path, cameras: PinholeCameras, images: list[np.ndarray], depths: list[np.ndarray],
                  train: list[int], test: list[int], points: np.ndarray, point_colors: np.ndarray,
                  settings: dict) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depths").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (rgb, depth) in enumerate(zip(images, depths)):
        write_png_rgb(out / "images" / frame_name(i), rgb)
        write_png_depth(out / "depths" / frame_name(i), depth)
        frames.append({
            "file_path": f"images/{frame_name(i)}",
            "depth_file_path": f"depths/{frame_name(i)}",
            "transform_matrix": cameras.c2w_opengl[i].round(8).tolist(),
        })
    write_ply(out / "sparse_points.ply", points, point_colors)
    held_out = [f"images/{frame_name(i)}" for i in test]
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": cameras.fx, "fl_y": cameras.fy, "cx": cameras.cx, "cy": cameras.cy,
        "w": cameras.width, "h": cameras.height,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "depth_unit_scale_factor": DEPTH_UNIT_SCALE,
        "ply_file_path": "sparse_points.ply",
        "frames": frames,
        "train_filenames": [f"images/{frame_name(i)}" for i in train],
        "val_filenames": held_out,
        "test_filenames": held_out,
    }
    (out / "transforms.json").write_text(json.dumps(transforms, indent=2))
    split = {"train_ids": train, "test_ids": test}
    (out / f"train_test_split_{len(train)}.json").write_text(json.dumps(split))
    (out / "scene.json").write_text(json.dumps(settings, indent=2, default=str))


def settings_record(config) -> dict:
    """Generator settings that define the content (not where it was written), so equal seeds give equal files."""
    record = asdict(config)
    record.pop("out", None)
    record.pop("overwrite", None)
    return record
