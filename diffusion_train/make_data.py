"""``genfusion-make-data``: training clips for the video model from masked reconstructions (paper supplement B.2).

For every input scene (a nerfstudio dataset folder): write its masked variant (one random corner patch of W/2 x H/2
per scene, :mod:`genfusion_ns.protocols.masked`), reconstruct it in-process with a nerfstudio method, render the
reconstruction full-frame along the capture trajectory (all frames, in order), and store artifact RGB-D, target
RGB-D and the clip index (:mod:`diffusion_train.clips`).

Sharded (``--shard i/n`` processes scenes i, i+n, ...) and resumable: a scene is built in ``scenes/<name>.partial``
and renamed when complete; finished scenes are skipped and never rewritten.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from diffusion_train.clips import (
    SCENES_DIR,
    SceneRecord,
    clip_index,
    is_scene_complete,
    write_manifest,
    write_scene,
)
from genfusion_ns import devices
from genfusion_ns.outputs import exit_with_error, prepare_output_folder

CONSOLE = Console()
COMMAND = "genfusion-make-data"
PARTIAL_SUFFIX = ".partial"


class MakeDataError(ValueError):
    """An input or option cannot be used; the message says what to change."""


@dataclass
class MakeDataConfig:
    """Build video-model training clips (artifact render, ground truth, references) from nerfstudio scenes."""

    scenes: tuple[str, ...]
    """Scene folders (with transforms.json), glob patterns, or .txt files listing one folder per line."""
    output: Path
    """Data folder (created; finished scenes in it are kept and skipped). Must be new, empty or written by this
    tool, and neither one of the scenes nor inside one."""
    artifacts: Literal["masked", "sparse"] = "masked"
    """How the artifact renders are made. "masked" (the authors' recipe): train on a W/2 x H/2 patch of every frame
    and render every frame full-frame. "sparse": train on the dataset's own training split as it is (e.g. a
    genfusion-scene with --train-views 3) and render all its frames, training and held-out, in file-name order; the
    artifacts then match sparse-view reconstruction."""
    method: str = "genfusion-2dgs-lite"
    """nerfstudio method used for the masked reconstruction."""
    max_steps: int | None = None
    """Reconstruction steps (default: the method's own)."""
    clip_length: int = 16
    """Frames per clip in the clip index (the released model uses 16)."""
    patch_fraction: float = 0.5
    """Visible patch side as a fraction of the image side (0.5 = W/2 x H/2)."""
    patch_placement: Literal["corner", "moving"] = "corner"
    """Where each frame's patch lies (genfusion_ns/protocols/masked.py). "corner" (the authors' data): one random
    corner per scene, the same in every frame. "moving": the path that bounces through the image, as in the masked
    benchmark (genfusion-bench's masked-K protocols), so the model also learns to extend a patch in every direction."""
    shard: str = "0/1"
    """"i/n": process scenes i, i+n, i+2n, ... of the sorted list (run n of these in parallel)."""
    seed: int = 0
    """Base seed; each scene's patch corner and reconstruction seed derive from it and the scene name."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the reconstruction and rendering."""
    mono_depth_model: str | None = None
    """Local transformers depth-estimation model for scenes without depth files."""
    mono_depth_kind: Literal["disparity", "depth"] = "disparity"
    """What the monocular model predicts: relative disparity (Depth Anything, DPT) or metric depth (ZoeDepth)."""
    keep_reconstruction: bool = False
    """Keep each scene's nerfstudio run (config + checkpoint) next to its clips."""


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError as error:
        raise MakeDataError(f"--shard must look like 'i/n' (e.g. 0/4), got {shard!r}") from error
    if count < 1 or not 0 <= index < count:
        raise MakeDataError(f"--shard {shard}: need n >= 1 and 0 <= i < n")
    return index, count


def select_shard(folders: list[Path], shard: str) -> list[Path]:
    """Scenes i, i+n, i+2n, ... of the sorted list for ``shard = "i/n"``."""
    index, count = parse_shard(shard)
    return sorted(folders)[index::count]


def expand_scenes(entries: tuple[str, ...]) -> list[Path]:
    """Folders from explicit paths, globs and list files; every one must hold a transforms.json."""
    folders: list[Path] = []
    for entry in entries:
        if entry.endswith(".txt") and Path(entry).is_file():
            candidates = [line.strip() for line in Path(entry).read_text().splitlines() if line.strip()]
        elif glob.has_magic(entry):
            candidates = sorted(glob.glob(entry))
            if not candidates:
                raise MakeDataError(f"the pattern {entry!r} matches nothing")
        else:
            candidates = [entry]
        folders.extend(Path(c) for c in candidates)
    missing = [str(f) for f in folders if not (f / "transforms.json").is_file()]
    if missing:
        raise MakeDataError(f"not nerfstudio dataset folders (no transforms.json): {', '.join(missing[:5])}")
    unique = sorted({f.resolve() for f in folders})
    if not unique:
        raise MakeDataError("no scenes given")
    return unique


def has_depth_files(folder: Path) -> bool:
    frames = json.loads((folder / "transforms.json").read_text()).get("frames", [])
    return bool(frames) and all("depth_file_path" in frame for frame in frames)


def scene_names(folders: list[Path]) -> dict[Path, str]:
    """Folder name per scene; names that collide (e.g. many ``<hash>/nerfstudio``) get the parent and a checksum."""
    names = {f: f.name for f in folders}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    for folder, name in names.items():
        if counts[name] > 1:
            names[folder] = f"{folder.parent.name}-{name}-{zlib.crc32(str(folder).encode()):08x}"
    return names


def scene_seed(base: int, name: str) -> int:
    return zlib.crc32(f"{base}:{name}".encode()) % (2**31)


def resolve_device(device: str) -> str:
    try:
        return devices.resolve_device(device)
    except devices.DeviceUnavailable as error:
        raise MakeDataError(str(error)) from None


def build_scene(config: MakeDataConfig, folder: Path, name: str, work: Path, on_stage=lambda _: None) -> SceneRecord:
    """(Masked) dataset -> reconstruction -> full-frame renders -> ``frames.safetensors`` + ``scene.json`` in ``work``."""
    from diffusion_train.mono_depth import monocular_target_depth
    from diffusion_train.reconstruction import render_capture, train_reconstruction
    from genfusion_ns.protocols import MaskedProtocolConfig, make_masked_dataset

    seed = scene_seed(config.seed, name)
    device = resolve_device(config.device)
    patch_settings = None
    dataset = folder
    if config.artifacts == "masked":
        on_stage("masking")
        masked = make_masked_dataset(MaskedProtocolConfig(
            source=folder, output=work / "masked", placement=config.patch_placement, downsample=1,
            patch_fraction=config.patch_fraction, seed=seed))
        patch = masked.patches[0]  # the first frame's (every frame's with "corner")
        patch_settings = {"x": patch.x, "y": patch.y, "width": patch.width, "height": patch.height,
                          "placement": config.patch_placement, "patch_fraction": config.patch_fraction}
        dataset = work / "masked"
    on_stage("reconstructing")
    run_config = train_reconstruction(dataset, work / "run", config.method, config.max_steps, device, seed)
    on_stage("rendering")
    renders = render_capture(run_config, include_eval=config.artifacts == "sparse")
    depth_source = "dataset depth files"
    target_depth = renders.target_depth
    if target_depth is None:
        on_stage("monocular depth")
        target_depth = monocular_target_depth(config.mono_depth_model, config.mono_depth_kind, renders.target_rgb,
                                              renders.artifact_depth, device)
        depth_source = f"monocular ({config.mono_depth_model}, {config.mono_depth_kind}) aligned to the render"
    num_frames, height, width = renders.artifact_depth.shape
    record = SceneRecord(
        name=name,
        source=str(folder),
        num_frames=num_frames,
        height=height,
        width=width,
        depth_units="pose units of transforms.json (metres when the dataset's poses are metric)",
        target_depth_source=depth_source,
        clip_length=config.clip_length,
        clips=clip_index(num_frames, config.clip_length),
        tensors={},
        settings={
            "method": config.method,
            "max_steps": config.max_steps,
            "seed": seed,
            "artifacts": config.artifacts,
            "patch": patch_settings,
            "image_filenames": [Path(f).name for f in renders.image_filenames],
        },
    )
    on_stage("writing")
    write_scene(work, {"artifact_rgb": renders.artifact_rgb, "artifact_depth": renders.artifact_depth,
                       "target_rgb": renders.target_rgb, "target_depth": target_depth}, record)
    if not config.keep_reconstruction:
        shutil.rmtree(work / "run", ignore_errors=True)
    return record


def _is_data_folder(folder: Path) -> bool:
    """A data folder written by this tool before folders carried a marker."""
    return (folder / SCENES_DIR).is_dir() or (folder / "manifest.json").is_file()


def make_data(config: MakeDataConfig) -> list[str]:
    """Process this shard's scenes; returns the names of the scenes built by this call (skipped ones excluded)."""
    index, count = parse_shard(config.shard)
    if config.clip_length < 1:
        raise MakeDataError(f"--clip-length must be >= 1, got {config.clip_length}")
    if config.output.exists() and not config.output.is_dir():
        raise MakeDataError(f"--output {config.output} exists and is not a folder")
    folders = expand_scenes(config.scenes)
    names = scene_names(folders)
    mine = select_shard(folders, config.shard)
    without_depth = [str(f) for f in mine if not has_depth_files(f)]
    if without_depth and config.mono_depth_model is None:
        raise MakeDataError(f"{len(without_depth)} scene(s) have no depth files (e.g. {without_depth[0]}); pass "
                            "--mono-depth-model <local folder of a transformers depth-estimation model> to estimate "
                            "their target depth")
    mono_depth = Path(config.mono_depth_model) if config.mono_depth_model else None
    # Resumable in a folder this tool made (or one from before the markers: it has scenes/ or a manifest); never
    # in a scene or the depth model, nor in a foreign folder.
    prepare_output_folder(config.output, False, COMMAND, {"the scene": folders, "--mono-depth-model": mono_depth},
                          error=MakeDataError, resumable=True, legacy=_is_data_folder)
    scenes_root = config.output / SCENES_DIR
    scenes_root.mkdir(parents=True, exist_ok=True)
    built: list[str] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[stage]}"))
    with Progress(*columns, console=CONSOLE) as progress:
        task = progress.add_task(f"shard {index}/{count}", total=len(mine), stage="")
        for folder in mine:
            name = names[folder]
            final = scenes_root / name
            if is_scene_complete(final):
                progress.update(task, advance=1, stage=f"{name}: already done, skipped")
                continue
            if final.exists():
                raise MakeDataError(f"{final} exists but is not a finished scene; it was not written by this tool "
                                    "(or was edited). Move it away and run again.")
            work = scenes_root / f"{name}{PARTIAL_SUFFIX}"
            if work.exists():
                shutil.rmtree(work)  # an interrupted attempt of this tool: start the scene again
            work.mkdir(parents=True)

            def on_stage(stage: str, scene: str = name) -> None:
                progress.update(task, stage=f"{scene}: {stage}")

            build_scene(config, folder, name, work, on_stage)
            os.replace(work, final)
            built.append(name)
            progress.update(task, advance=1, stage=f"{name}: done")
    settings = {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in asdict(config).items() if k not in ("scenes", "output", "shard")}
    write_manifest(config.output, settings)
    return built


def entrypoint() -> None:
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    config = tyro.cli(MakeDataConfig, description=MakeDataConfig.__doc__)
    from diffusion_train.mono_depth import MonoDepthUnavailable
    from diffusion_train.reconstruction import ReconstructionError
    from genfusion_ns.protocols import MaskedProtocolError

    try:
        built = make_data(config)
    except (MakeDataError, MaskedProtocolError, MonoDepthUnavailable, ReconstructionError) as error:
        exit_with_error(COMMAND, error)
    CONSOLE.print(f"Built {len(built)} scene(s); index in {config.output / 'manifest.json'}")


if __name__ == "__main__":
    entrypoint()
