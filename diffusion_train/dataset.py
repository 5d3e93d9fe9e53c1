"""Training samples for the video model: windows of ``genfusion-make-data`` scenes in the model's pixel conventions.

A sample is ``num_frames`` consecutive frames (the authors draw the window start uniformly; here every start with
``window_stride`` is one item) converted with the pipeline's own preprocessing
(:mod:`genfusion_ns.video.preprocess`): RGB to [-1, 1] at the model resolution, depth to the per-clip disparity
code, and one reference frame (a clean target frame drawn from the window, which is what the authors intended).

Depth normalisation: the artifact clip is normalised over its own valid pixels exactly as at inference. The target
depth is normalised with the *artifact's* disparity range (clamped to [-1, 1]) because the pipeline maps the repaired
code back to depth with the artifact's range; a clip whose artifact renders nothing falls back to the target's
own range. (The authors store pre-normalised depth and do not say which range they used, reference notes §6.11.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from diffusion_train.clips import ClipDataError, finished_scenes, read_scene_record, read_window
from genfusion_ns.video.clips import frame_codes
from genfusion_ns.video.framing import Letterbox
from genfusion_ns.video.preprocess import pad_frames, rgb_to_model


@dataclass(frozen=True)
class WindowRef:
    scene_dir: Path
    start: int
    num_scene_frames: int


class ClipDataset(Dataset):
    """Every ``num_frames`` window (stride ``window_stride``) of every finished scene in ``data_dirs``."""

    def __init__(self, data_dirs: Sequence[Path], num_frames: int, height: int, width: int, window_stride: int = 1,
                 target_depth_range: Literal["artifact", "own"] = "artifact"):
        if window_stride < 1:
            raise ValueError(f"window_stride must be >= 1, got {window_stride}")
        self.num_frames, self.height, self.width = num_frames, height, width
        self.target_depth_range = target_depth_range
        self.windows: list[WindowRef] = []
        for data_dir in data_dirs:
            scenes = finished_scenes(Path(data_dir))
            if not scenes:
                raise ClipDataError(f"{data_dir} holds no finished scenes; create them with genfusion-make-data")
            for scene_dir in scenes:
                count = read_scene_record(scene_dir).num_frames
                starts = range(0, max(count - num_frames, 0) + 1, window_stride)
                self.windows.extend(WindowRef(scene_dir, s, count) for s in starts)

    def __len__(self) -> int:
        return len(self.windows)

    def raw(self, index: int) -> dict[str, torch.Tensor]:
        """The window as stored, frames-last floats: RGB in [0, 1] ``[F, H, W, 3]``, depth ``[F, H, W]``."""
        ref = self.windows[index]
        frames = read_window(ref.scene_dir, ref.start, self.num_frames)
        out = {}
        for key, value in frames.items():
            tensor = torch.from_numpy(value.copy())
            tensor = tensor.float() / 255.0 if key.endswith("rgb") else tensor.float()
            out[key] = pad_frames(tensor, self.num_frames)
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        raw = self.raw(index)
        height, width = self.height, self.width
        valid_frames = min(self.num_frames, self.windows[index].num_scene_frames - self.windows[index].start)
        reference_index = int(torch.randint(0, valid_frames, ()))
        letterbox = Letterbox.fit(raw["artifact_rgb"].shape[1], raw["artifact_rgb"].shape[2], height, width)
        artifact_rgb, artifact_depth, artifact_range = frame_codes(
            raw["artifact_rgb"], raw["artifact_depth"], letterbox
        )
        target_range = artifact_range if self.target_depth_range == "artifact" else None
        target_rgb, target_depth, _ = frame_codes(raw["target_rgb"], raw["target_depth"], letterbox, target_range)
        return {
            "artifact_rgb": artifact_rgb,
            "artifact_depth": artifact_depth,
            "target_rgb": target_rgb,
            "target_depth": target_depth,
            "reference": rgb_to_model(raw["target_rgb"][reference_index:reference_index + 1], height, width)[:, 0],
            "index": torch.tensor(index),
        }
