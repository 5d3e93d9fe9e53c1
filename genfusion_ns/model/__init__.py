"""The GenFusion 2DGS nerfstudio model: config, model, losses, densification strategies, checkpoint helpers.

``GenFusionModel`` is loaded on first access so that importing configs (which every ``ns-*`` command does) stays
cheap.
"""

from genfusion_ns.model.config import GenFusionModelConfig
from genfusion_ns.model.densification import SparseAwareStrategy, SurfelStrategy, Vanilla2DGSStrategy
from genfusion_ns.model.losses import scale_shift_invariant_depth_loss

__all__ = [
    "GenFusionModel",
    "GenFusionModelConfig",
    "SparseAwareStrategy",
    "SurfelStrategy",
    "Vanilla2DGSStrategy",
    "scale_shift_invariant_depth_loss",
]


def __getattr__(name: str):
    if name == "GenFusionModel":
        from genfusion_ns.model.genfusion_model import GenFusionModel

        return GenFusionModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
