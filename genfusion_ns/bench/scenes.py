"""The bench's scenes: the user's nerfstudio datasets, or procedural scenes generated into the report folder.

Generated scenes use the dense split (every 8th view held out), so their seed points come from most views and every
protocol (sparse-N, masked-K, dense) can restrict them itself. A resumed bench reuses a generated scene only if it was
generated with the same settings; it never regenerates over a different one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genfusion_ns.bench.config import GENERATE, BenchConfig, BenchError


@dataclass(frozen=True)
class BenchScene:
    name: str
    """Unique name in the report (folder name, or ``room-s<seed>`` for generated scenes)."""
    path: Path
    generated: bool


def _generated_scene(config: BenchConfig, seed: int, folder: Path) -> BenchScene:
    from genfusion_ns.scenes import SceneConfig, generate_scene
    from genfusion_ns.scenes.dataset import settings_record

    style = "" if config.scene_textures == "procedural" else f"-{config.scene_textures}"
    name = f"{config.scene_kind}{style}-s{seed}"
    path = folder / name
    scene_config = SceneConfig(
        out=path,
        seed=seed,
        views=config.scene_views,
        train_views="all",
        resolution=config.scene_resolution,
        kind=config.scene_kind,
        textures=config.scene_textures,
    )
    expected = json.loads(json.dumps(settings_record(scene_config), default=str))
    record = path / "scene.json"
    if record.is_file() and (path / "transforms.json").is_file():
        written = json.loads(record.read_text())
        written.setdefault("textures", "procedural")  # scenes generated before photo textures existed
        if written != expected:
            raise BenchError(
                f"{path} holds a scene generated with other settings; use another --output or the "
                "same --seed/--scene-views/--scene-resolution/--scene-kind/--scene-textures as before."
            )
        return BenchScene(name, path, True)
    if path.exists() and any(path.iterdir()):
        raise BenchError(
            f"{path} exists but is not a finished generated scene; remove it or use another --output."
        )
    generate_scene(config=scene_config)
    return BenchScene(name, path, True)


def resolve_scenes(config: BenchConfig, folder: Path) -> list[BenchScene]:
    """Generate (or reuse) procedural scenes, check user datasets; names are unique."""
    scenes: list[BenchScene] = []
    for entry in config.scenes:
        if entry == GENERATE:
            scenes += [_generated_scene(config, config.seed + i, folder) for i in range(config.num_scenes)]
            continue
        path = Path(entry).expanduser()
        if not (path / "transforms.json").is_file():
            raise BenchError(
                f"scene {entry!r} is not a nerfstudio dataset folder (no transforms.json) and not "
                f"'{GENERATE}'."
            )
        scenes.append(BenchScene(path.resolve().name, path.resolve(), False))
    names = [s.name for s in scenes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BenchError(f"scenes {duplicates} appear twice (scene names are folder names); list each once.")
    return scenes
