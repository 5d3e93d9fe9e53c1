"""nerfstudio method registrations (entry-point group ``nerfstudio.method_configs``).

nerfstudio imports this module for every ``ns-*`` command, so it only builds config dataclasses: no rasterizer, no
diffusion model, no downloads. Importing it also lets ``torch.load(weights_only=True)`` read nerfstudio checkpoints
(numpy scalars inside), which resume, ``ns-eval``, ``ns-viewer`` and ``ns-export`` need under torch >= 2.6.
"""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from genfusion_ns.model.checkpoint import allow_numpy_scalars_in_checkpoints
from genfusion_ns.model.recipes import (
    LITE_MAX_STEPS,
    LITE_POSITION_LR_STEPS,
    SPARSE_VIEW_MAX_STEPS,
    lite_model,
    make_trainer_config,
    sparse_view_model,
)

allow_numpy_scalars_in_checkpoints()

genfusion_2dgs = MethodSpecification(
    config=make_trainer_config("genfusion-2dgs", sparse_view_model(), max_steps=SPARSE_VIEW_MAX_STEPS),
    description="GenFusion's 2D Gaussian surfel reconstruction without diffusion (sparse-view recipe, 7000 steps).",
)

genfusion_2dgs_lite = MethodSpecification(
    config=make_trainer_config(
        "genfusion-2dgs-lite",
        lite_model(),
        max_steps=LITE_MAX_STEPS,
        position_lr_steps=LITE_POSITION_LR_STEPS,
        steps_per_save=LITE_MAX_STEPS,
        steps_per_eval_image=250,
        steps_per_eval_all_images=LITE_MAX_STEPS,
    ),
    description="genfusion-2dgs with a CPU budget: a 96x96 scene in a few minutes on 2 cores.",
)


def _fusion_method(name: str) -> MethodSpecification:
    # The fusion recipes import the pipeline module lazily here so that the baseline methods stay importable alone.
    from genfusion_ns.fusion.recipes import genfusion_config, genfusion_lite_config

    if name == "genfusion":
        return MethodSpecification(
            config=genfusion_config(),
            description="GenFusion: 2DGS reconstruction with cyclic RGB-D video-diffusion repair of novel views.",
        )
    return MethodSpecification(
        config=genfusion_lite_config(),
        description="genfusion with a CPU budget: a 96x96 scene with three repair rounds in minutes on 2 cores.",
    )


genfusion = _fusion_method("genfusion")
genfusion_lite = _fusion_method("genfusion-lite")
