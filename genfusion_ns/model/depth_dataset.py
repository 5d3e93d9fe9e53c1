"""An image dataset that adds depth when the dataset has depth files, and nothing otherwise.

nerfstudio's ``DepthDataset`` runs a ZoeDepth download (torch.hub) when depth files are missing, which is neither
possible offline nor wanted for a photometric baseline. Depth is returned in scene units (file value x
``depth_unit_scale_factor`` x the dataparser's scale), i.e. directly comparable with rendered z-depth.
"""

from __future__ import annotations

import cv2
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.utils.data_utils import get_depth_image_from_path

from genfusion_ns.model.dataparser import DatasetError

DEPTH_KEY = "depth_image"


class OptionalDepthDataset(InputDataset):
    """``InputDataset`` plus ``batch["depth_image"]`` ([H, W, 1] float32) for datasets that list depth files."""

    exclude_batch_keys_from_device: list[str] = InputDataset.exclude_batch_keys_from_device + [DEPTH_KEY]

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0):
        super().__init__(dataparser_outputs, scale_factor)
        self.depth_filenames: list | None = self.metadata.get("depth_filenames")
        self.depth_unit_scale_factor: float = float(self.metadata.get("depth_unit_scale_factor", 1e-3))

    @property
    def has_depth(self) -> bool:
        return bool(self.depth_filenames)

    def get_metadata(self, data: dict) -> dict:
        if not self.has_depth:
            return {}
        image_idx = data["image_idx"]
        # self.cameras already carries the dataset's resolution scale factor (the image is loaded at that size).
        height, width = int(self.cameras.height[image_idx]), int(self.cameras.width[image_idx])
        scale = self.depth_unit_scale_factor * self._dataparser_outputs.dataparser_scale
        path = self.depth_filenames[image_idx]
        try:
            depth = get_depth_image_from_path(filepath=path, height=height, width=width, scale_factor=scale)
        except (AttributeError, ValueError, OSError, EOFError, cv2.error) as error:
            # OpenCV returns None for an unreadable file (-> AttributeError), which inside the datamanager's
            # cached_train would surface as "object has no attribute 'cached_train'"; name the file instead.
            raise DatasetError(
                f"Depth file {path} cannot be decoded ({type(error).__name__}: {error}); the file is "
                "truncated or corrupt -- re-export it, or remove depth_file_path from transforms.json."
            ) from error
        return {DEPTH_KEY: depth.to(torch.float32)}
