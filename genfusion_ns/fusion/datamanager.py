"""A full-image datamanager whose training set can grow at run time with repaired views.

Repaired views are appended to the *training* dataset (cameras, image files, cache), so the viewer shows them as
camera frustums and they follow nerfstudio's data path; the evaluation dataset is never touched, so ``ns-eval``
scores only real held-out views. Real and repaired views are sampled from separate pools: ``next_train`` returns
real views only and ``next_repaired`` repaired ones (each pool is a shuffled pass without replacement). A repaired
view whose frame weight is 0 (the round's frame check skipped it, see ``genfusion_ns/fusion/agreement.py``) stays in
the training dataset, so the viewer still shows it, but is never drawn; other weights travel in the batch
(``REPAIRED_WEIGHT_KEY``) and scale that view's repaired-view loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)

from genfusion_ns.fusion.views import RepairedViews
from genfusion_ns.model.checkpoint import python_random_state
from genfusion_ns.model.depth_dataset import OptionalDepthDataset

REPAIRED_DEPTH_KEY = "repaired_depth"
IS_REPAIRED_KEY = "is_repaired"
REPAIRED_WEIGHT_KEY = "repaired_frame_weight"


@dataclass
class GenFusionDatamanagerConfig(FullImageDatamanagerConfig):
    _target: Type = field(default_factory=lambda: GenFusionDatamanager)
    repaired_sampling_seed: int = 0
    """Seed of the order in which repaired views are drawn."""


def concat_cameras(first: Cameras, second: Cameras) -> Cameras:
    """nerfstudio 1.1.5 has no ``Cameras.cat``: rebuild one from concatenated fields (1-D batches only)."""

    def cat(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if a is None or b is None else torch.cat([a, b.to(a.device, a.dtype)], dim=0)

    return Cameras(
        camera_to_worlds=cat(first.camera_to_worlds, second.camera_to_worlds),
        fx=cat(first.fx, second.fx), fy=cat(first.fy, second.fy),
        cx=cat(first.cx, second.cx), cy=cat(first.cy, second.cy),
        width=cat(first.width, second.width), height=cat(first.height, second.height),
        distortion_params=cat(first.distortion_params, second.distortion_params),
        camera_type=cat(first.camera_type, second.camera_type),
        times=cat(first.times, second.times),
    )


def cameras_for(views: RepairedViews, like: Cameras) -> Cameras:
    """Pinhole cameras (no distortion) for repaired views, with the same optional fields as ``like``."""
    n = len(views)
    column = lambda v: v.reshape(n, 1).float()  # noqa: E731
    return Cameras(
        camera_to_worlds=views.camera_to_worlds.float(),
        fx=column(views.fx), fy=column(views.fy), cx=column(views.cx), cy=column(views.cy),
        width=torch.full((n, 1), views.width, dtype=torch.long),
        height=torch.full((n, 1), views.height, dtype=torch.long),
        distortion_params=None if like.distortion_params is None else torch.zeros(n, like.distortion_params.shape[-1]),
        camera_type=torch.full((n, 1), CameraType.PERSPECTIVE.value, dtype=torch.long),
        times=None if like.times is None else torch.zeros(n, 1),
    )


class GenFusionDatamanager(FullImageDatamanager[OptionalDepthDataset]):
    config: GenFusionDatamanagerConfig

    def __init__(self, config: GenFusionDatamanagerConfig, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.num_real_views = len(self.train_dataset)
        self._repaired_rng = random.Random(config.repaired_sampling_seed)
        self._repaired_unseen: List[int] = []

    # ----------------------------------------------------------------- sampling
    def sample_train_cameras(self) -> List[int]:
        """Shuffled real-view indices (repaired views have their own pool, see :meth:`next_repaired`)."""
        num_real = getattr(self, "num_real_views", len(self.train_dataset))
        if not hasattr(self, "random_generator"):
            self.random_generator = random.Random(self.config.train_cameras_sampling_seed)
        indices = list(range(num_real))
        self.random_generator.shuffle(indices)
        return indices

    @property
    def repaired_indices(self) -> List[int]:
        """Every repaired view in the training dataset, trained on or not."""
        return list(range(self.num_real_views, len(self.train_dataset)))

    @property
    def trained_repaired_indices(self) -> List[int]:
        """The repaired views that are drawn for training: those with a frame weight above 0."""
        return [i for i in self.repaired_indices if float(self.cached_train[i].get(REPAIRED_WEIGHT_KEY, 1.0)) > 0]

    def next_repaired(self, step: int) -> Optional[Tuple[Cameras, Dict]]:
        """The next repaired view (camera, batch), or ``None`` when there is none with a weight above 0."""
        if not self._repaired_unseen:
            self._repaired_unseen = self.trained_repaired_indices
            if not self._repaired_unseen:
                return None
            self._repaired_rng.shuffle(self._repaired_unseen)
        index = self._repaired_unseen.pop(0)
        data = self.cached_train[index].copy()
        data["image"] = data["image"].to(self.device)
        camera = self.train_cameras[index : index + 1].to(self.device)
        camera.metadata = {"cam_idx": index}
        return camera, data

    def repaired_sampling_state(self) -> Dict[str, object]:
        """Where the repaired-view pool stands (plain types), so a resumed run draws the same views."""
        return {"rng": self._repaired_rng.getstate(), "unseen": list(self._repaired_unseen)}

    def set_repaired_sampling_state(self, state: Dict[str, object]) -> None:
        self._repaired_rng.setstate(python_random_state(state["rng"]))
        self._repaired_unseen = [int(i) for i in state["unseen"]]  # type: ignore[union-attr]

    # ----------------------------------------------------------------- growing the training set
    @property
    def scene_to_file_depth(self) -> float:
        """Factor from scene-unit depth to the dataset's depth-file units."""
        dataset = self.train_dataset
        return 1.0 / (dataset.depth_unit_scale_factor * dataset._dataparser_outputs.dataparser_scale)

    def add_repaired_views(self, views: RepairedViews, image_paths: List[Path], depth_paths: List[Path]) -> List[int]:
        """Append repaired views (files already written) to the training dataset and the image cache."""
        _ = self.cached_train  # the cache must exist before it is extended
        dataset = self.train_dataset
        start = len(dataset)
        new_cameras = cameras_for(views, dataset.cameras)
        dataset.cameras = concat_cameras(dataset.cameras, new_cameras)
        outputs = dataset._dataparser_outputs
        outputs.cameras = concat_cameras(outputs.cameras, new_cameras)
        outputs.image_filenames.extend(Path(p) for p in image_paths)
        if dataset.has_depth:  # depth files written in the dataset's file units (see scene_to_file_depth)
            dataset.depth_filenames.extend(Path(p) for p in depth_paths)
        weights = views.frame_weights
        for i in range(len(views)):
            entry = {
                "image_idx": start + i,
                "image": views.rgb[i].to(self.device) if self.config.cache_images == "gpu" else views.rgb[i],
                REPAIRED_DEPTH_KEY: views.depth[i][..., None].float(),
                IS_REPAIRED_KEY: True,
                REPAIRED_WEIGHT_KEY: float(weights[i]),
            }
            if views.loss_masks is not None:  # nerfstudio's mask key, here a per-pixel weight in [0, 1]
                entry["mask"] = views.loss_masks[i][..., None].float()
            self.cached_train.append(entry)
        self.train_cameras = dataset.cameras.to(self.device)
        self._repaired_unseen = []
        return list(range(start, len(dataset)))

    def remove_repaired_views(self) -> int:
        """Drop every repaired view (the authors replace the previous round's frames); returns how many."""
        n = len(self.train_dataset) - self.num_real_views
        if n <= 0:
            return 0
        dataset, keep = self.train_dataset, self.num_real_views
        dataset.cameras = dataset.cameras[:keep]
        outputs = dataset._dataparser_outputs
        outputs.cameras = outputs.cameras[:keep]
        del outputs.image_filenames[keep:]
        if dataset.has_depth:
            del dataset.depth_filenames[keep:]
        del self.cached_train[keep:]
        self.train_cameras = dataset.cameras.to(self.device)
        self._repaired_unseen = []
        return n
