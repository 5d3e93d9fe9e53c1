"""``generate_scene``: layout → camera path → ray-cast views → nerfstudio dataset on disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genfusion_ns.axes import flip_camera_axes
from genfusion_ns.outputs import staged_output_folder

from .cameras import PinholeCameras, arc_path, intrinsics_for, orbit_path, walk_path
from .config import COMMAND, SceneConfig, SceneConfigError
from .dataset import sample_seed_points, settings_record, split_indices, write_dataset
from .layout import LAYOUTS, SceneLayout
from .render import render_view


@dataclass
class SceneSummary:
    out: Path
    train_indices: list[int]
    test_indices: list[int]
    num_points: int


def make_cameras(config: SceneConfig, layout: SceneLayout, rng: np.random.Generator) -> PinholeCameras:
    phase = float(rng.uniform(0, 2 * np.pi))
    if config.camera_path == "orbit":
        poses = orbit_path(config.views, layout.orbit_radius, layout.camera_height, layout.target,
                           height_wobble=0.15, phase=phase)
    elif config.camera_path == "walk":
        poses = walk_path(config.views, layout.target, layout.orbit_radius, layout.camera_height,
                          layout.walk_direction, phase=phase)
    else:
        poses = arc_path(config.views, layout.orbit_radius * 1.1, layout.camera_height, layout.target,
                         span_degrees=60.0, phase=phase)
    fx, fy, cx, cy = intrinsics_for(config.width, config.resolution, config.fov_degrees)
    return PinholeCameras(poses, fx, fy, cx, cy, config.width, config.resolution)


def build_scene(config: SceneConfig) -> tuple[SceneLayout, PinholeCameras, np.random.Generator]:
    """The layout and cameras of ``config``'s scene, and its random generator where :func:`generate_scene` goes on
    (seed points). Anything that must reproduce a generated scene's views builds them here, so the draw order stays
    in one place."""
    rng = np.random.default_rng(config.seed)
    layout = LAYOUTS[config.kind](rng, config.textures)
    return layout, make_cameras(config, layout, rng), rng


def generate_scene(out: str | Path | None = None, config: SceneConfig | None = None, **options) -> SceneSummary:
    """Generate a scene; ``options`` are :class:`SceneConfig` fields (``seed``, ``views``, ``train_views``, ...)."""
    config = replace(config or SceneConfig(), **options)
    if out is not None:
        config = replace(config, out=Path(out))
    config.validate()
    layout, cameras, rng = build_scene(config)
    views = [render_view(layout, cameras, i, config.supersample) for i in range(config.views)]
    images, depths = [v.rgb for v in views], [v.depth for v in views]
    train, test = split_indices(config.views, config.train_views)
    points, colors = sample_seed_points(cameras, depths, images, train, config.points_per_view,
                                        config.point_noise, rng)
    out_dir = Path(config.out)
    # Written next to --out and renamed into place: a crashed run never leaves a dataset that looks finished.
    with staged_output_folder(out_dir, config.overwrite, COMMAND, flag="--out", error=SceneConfigError) as staged:
        write_dataset(staged, cameras, images, depths, train, test, points, colors, settings_record(config))
    return SceneSummary(out_dir, train, test, len(points))


def render_scene_views(scene_dir: str | Path, c2w_opengl: np.ndarray, fx: np.ndarray, fy: np.ndarray,
                       cx: np.ndarray, cy: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of a generated scene from new cameras: ``(rgb [V,H,W,3] in [0,1], depth [V,H,W] metres)``.

    ``c2w_opengl`` ``[V,3|4,4]`` are poses in the dataset's ``transforms.json`` frame (nerfstudio's OpenGL axes); the
    scene is rebuilt from the ``scene.json`` the generator wrote, so any view of it can be scored exactly (e.g. the
    frames a video model repaired).
    """
    settings = json.loads((Path(scene_dir) / "scene.json").read_text())
    layout = LAYOUTS[settings["kind"]](np.random.default_rng(settings["seed"]), settings.get("textures", "procedural"))
    rgbs, depths = [], []
    for i in range(len(c2w_opengl)):
        c2w = np.eye(4)
        c2w[:3, :] = np.asarray(c2w_opengl[i], dtype=np.float64)[:3, :]
        cameras = PinholeCameras(flip_camera_axes(c2w)[None], float(fx[i]), float(fy[i]),
                                 float(cx[i]), float(cy[i]), int(width), int(height))
        view = render_view(layout, cameras, 0, int(settings.get("supersample", 2)))
        rgbs.append(view.rgb)
        depths.append(view.depth)
    return np.stack(rgbs), np.stack(depths)
