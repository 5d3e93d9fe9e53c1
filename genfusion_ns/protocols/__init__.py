"""Dataset protocols of the paper, shared by data generation and evaluation: the masked (narrow field-of-view) input
and the sparse-view split."""

from .common import ProtocolError
from .masked import (
    MaskedDatasetSummary,
    MaskedProtocolConfig,
    MaskedProtocolError,
    bouncing_patch_path,
    corner_patch_origin,
    make_masked_dataset,
)
from .sparse_views import SparseProtocolConfig, SparseProtocolError, make_sparse_dataset

__all__ = [
    "MaskedDatasetSummary",
    "MaskedProtocolConfig",
    "MaskedProtocolError",
    "ProtocolError",
    "SparseProtocolConfig",
    "SparseProtocolError",
    "bouncing_patch_path",
    "corner_patch_origin",
    "make_masked_dataset",
    "make_sparse_dataset",
]
