"""Dataset protocols shared by data generation and evaluation (e.g. the masked-input protocol of GenFusion)."""

from .masked import (
    MaskedDatasetSummary,
    MaskedProtocolConfig,
    MaskedProtocolError,
    bouncing_patch_path,
    corner_patch_origin,
    make_masked_dataset,
)

__all__ = [
    "MaskedDatasetSummary",
    "MaskedProtocolConfig",
    "MaskedProtocolError",
    "bouncing_patch_path",
    "corner_patch_origin",
    "make_masked_dataset",
]
