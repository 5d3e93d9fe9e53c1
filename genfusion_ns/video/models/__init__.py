"""The networks of the GenFusion RGB-D video model on diffusers/transformers classes.

* :class:`GenFusionUNet` — ``UNet3DConditionModel`` + fps embedding + split-context cross-attention.
* :class:`GenFusionResampler` — ``IPAdapterPlusImageProjection`` as a saveable diffusers model.
* image encoder — ``transformers.CLIPVisionModel`` (use ``last_hidden_state``: all tokens, no ``post_layernorm``).
* VAE — ``diffusers.AutoencoderKL`` with 4 input/output channels (RGB + depth code).

:mod:`.configs` defines :class:`VideoModelConfig` and loads one (``"full"``, ``"small"``, ``"tiny"``, or an
authors' lvdm config); :mod:`.architectures` holds the named lvdm configs as data, :mod:`.lvdm` translates
their sections, and :func:`build_components` instantiates a config.
"""

from .attention import SplitContextCrossAttnProcessor
from .build import COMPONENT_NAMES, build_component, build_components, clip_vision_config
from .configs import (
    NAMED_CONFIGS,
    VideoModelConfig,
    VideoModelSettings,
    config_from_lvdm,
    load_model_config,
    model_settings,
    named_config,
)
from .image_proj import GenFusionResampler
from .unet import GenFusionUNet, TimestepAndFpsEmbedding

__all__ = [
    "COMPONENT_NAMES",
    "NAMED_CONFIGS",
    "GenFusionResampler",
    "GenFusionUNet",
    "SplitContextCrossAttnProcessor",
    "TimestepAndFpsEmbedding",
    "VideoModelConfig",
    "VideoModelSettings",
    "build_component",
    "build_components",
    "clip_vision_config",
    "config_from_lvdm",
    "load_model_config",
    "model_settings",
    "named_config",
]
