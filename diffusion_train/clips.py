"""On-disk format of the video-model training data: one safetensors file per scene plus JSON manifests.

Layout of a data folder written by ``genfusion-make-data``::

    <out>/manifest.json                  index of every finished scene (rebuilt from the scene records)
    <out>/scenes/<name>/frames.safetensors
    <out>/scenes/<name>/scene.json        this scene's record (written last: its presence marks the scene complete)
    <out>/scenes/<name>/masked/           the masked-input dataset the artifacts were reconstructed from

``frames.safetensors`` holds the whole capture trajectory, frames in capture (file-name) order:

* ``artifact_rgb`` uint8 ``[N, H, W, 3]``: full-frame render of the masked reconstruction, colour on black;
* ``artifact_depth`` float16 ``[N, H, W]``: its z-depth, 0 where nothing renders;
* ``target_rgb`` uint8 ``[N, H, W, 3]``: the captured images (also the reference frames);
* ``target_depth`` float16 ``[N, H, W]``: dataset depth or aligned monocular depth, 0 = unknown.

Depths are in the units of the dataset's camera poses (``transforms.json``); for datasets whose depth files are in
metres with poses in metres (e.g. ``genfusion-scene`` output) that is metres. Float32 is used instead of float16
when a depth would overflow float16. A *clip* is a window ``[start, start + length)`` of these frames; windows are
read lazily with ``safe_open`` slices, so training never loads a whole scene.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "genfusion-video-clips/1"
FRAMES_FILE = "frames.safetensors"
SCENE_RECORD = "scene.json"
MANIFEST = "manifest.json"
SCENES_DIR = "scenes"
RGB_KEYS = ("artifact_rgb", "target_rgb")
DEPTH_KEYS = ("artifact_depth", "target_depth")
FLOAT16_MAX = 65504.0


class ClipDataError(ValueError):
    """A data folder or scene file is missing or malformed; the message says which and why."""


@dataclass
class ClipWindow:
    """One training clip: frames ``[start, start + length)``; references are drawn from ``reference_range``."""

    start: int
    length: int
    reference_range: tuple[int, int]


@dataclass
class SceneRecord:
    """Everything needed to interpret (and reproduce) one scene's ``frames.safetensors``."""

    name: str
    source: str
    num_frames: int
    height: int
    width: int
    depth_units: str
    target_depth_source: str
    clip_length: int
    clips: list[ClipWindow]
    tensors: dict[str, dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneRecord:
        if data.get("format") != FORMAT:
            raise ClipDataError(f"scene record has format {data.get('format')!r}, expected {FORMAT!r}")
        clips = [ClipWindow(c["start"], c["length"], tuple(c["reference_range"])) for c in data["clips"]]
        return cls(**{**data, "clips": clips})


def clip_index(num_frames: int, clip_length: int) -> list[ClipWindow]:
    """Windows covering every frame (see ``genfusion_ns.video.preprocess.clip_windows``); references from the clip."""
    from genfusion_ns.video.preprocess import clip_windows

    windows = []
    for start, _ in clip_windows(num_frames, clip_length):
        length = min(clip_length, num_frames - start)
        windows.append(ClipWindow(start, length, (start, start + length)))
    return windows


def _depth_to_storage(depth: torch.Tensor) -> torch.Tensor:
    depth = depth.float()
    if not bool(torch.isfinite(depth).all()) or bool((depth < 0).any()):
        raise ClipDataError("depth must be finite and >= 0 (0 marks unknown pixels)")
    return depth.half() if float(depth.max()) < FLOAT16_MAX else depth


def _rgb_to_storage(rgb: torch.Tensor) -> torch.Tensor:
    if rgb.dtype == torch.uint8:
        return rgb
    return (rgb.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def write_scene(scene_dir: Path, frames: dict[str, torch.Tensor], record: SceneRecord) -> None:
    """Write ``frames.safetensors`` then ``scene.json`` (the completion marker) into ``scene_dir``."""
    expected = set(RGB_KEYS + DEPTH_KEYS)
    if set(frames) != expected:
        raise ClipDataError(f"scene frames must have exactly the keys {sorted(expected)}, got {sorted(frames)}")
    tensors = {k: _rgb_to_storage(frames[k]).contiguous() for k in RGB_KEYS}
    tensors.update({k: _depth_to_storage(frames[k]).contiguous() for k in DEPTH_KEYS})
    n, h, w = record.num_frames, record.height, record.width
    for key, tensor in tensors.items():
        shape = (n, h, w, 3) if key in RGB_KEYS else (n, h, w)
        if tuple(tensor.shape) != shape:
            raise ClipDataError(f"{key} has shape {tuple(tensor.shape)}, expected {shape}")
    record.tensors = {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                      for k, v in tensors.items()}
    scene_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(scene_dir / FRAMES_FILE), metadata={"format": FORMAT})
    _atomic_write_json(scene_dir / SCENE_RECORD, record.to_json())


def _atomic_write_json(path: Path, data: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


def is_scene_complete(scene_dir: Path) -> bool:
    return (scene_dir / SCENE_RECORD).is_file() and (scene_dir / FRAMES_FILE).is_file()


def read_scene_record(scene_dir: Path) -> SceneRecord:
    if not is_scene_complete(scene_dir):
        raise ClipDataError(f"{scene_dir} is not a finished scene (needs {SCENE_RECORD} and {FRAMES_FILE})")
    return SceneRecord.from_json(json.loads((scene_dir / SCENE_RECORD).read_text()))


def finished_scenes(data_dir: Path) -> list[Path]:
    """Scene folders of a data folder whose output is complete, sorted by name."""
    root = Path(data_dir) / SCENES_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_scene_complete(p))


def write_manifest(data_dir: Path, settings: dict[str, Any] | None = None) -> Path:
    """(Re)build ``manifest.json`` from the finished scenes; safe to call from several shards."""
    scenes = [read_scene_record(p).to_json() for p in finished_scenes(data_dir)]
    manifest = {
        "format": FORMAT,
        "layout": "scenes/<name>/frames.safetensors (+ scene.json); see diffusion_train/clips.py",
        "tensors": {
            "artifact_rgb": "uint8 [N,H,W,3], render of the masked reconstruction on black",
            "artifact_depth": "float16 [N,H,W], rendered z-depth in pose units, 0 = nothing rendered",
            "target_rgb": "uint8 [N,H,W,3], captured images (reference frames are drawn from them)",
            "target_depth": "float16 [N,H,W], dataset or aligned monocular z-depth in pose units, 0 = unknown",
        },
        "num_scenes": len(scenes),
        "num_clips": sum(len(s["clips"]) for s in scenes),
        "settings": settings or {},
        "scenes": scenes,
    }
    path = Path(data_dir) / MANIFEST
    _atomic_write_json(path, manifest)
    return path


def read_window(scene_dir: Path, start: int, length: int) -> dict[str, np.ndarray]:
    """Frames ``[start, start + length)`` of every tensor, read lazily (only that slice leaves the disk)."""
    with safe_open(str(Path(scene_dir) / FRAMES_FILE), framework="np") as handle:
        return {key: handle.get_slice(key)[start:start + length] for key in RGB_KEYS + DEPTH_KEYS}


def read_frame(scene_dir: Path, key: str, index: int) -> np.ndarray:
    with safe_open(str(Path(scene_dir) / FRAMES_FILE), framework="np") as handle:
        return handle.get_slice(key)[index:index + 1][0]
