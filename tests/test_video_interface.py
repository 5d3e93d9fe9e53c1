"""VideoRepairModel: the pipeline, the ``identity`` stand-in and ``random-tiny`` all satisfy the contract."""

from __future__ import annotations

import pytest
import torch

from genfusion_ns.fusion.video_model import IdentityRepair, load_video_pipeline
from genfusion_ns.video.interface import VideoClipConfig, VideoRepairModel, VideoRepairOutput

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("spec", ["identity", "random-tiny", "default"])
def test_every_video_model_satisfies_the_repair_interface(spec):
    """isinstance against the runtime-checkable Protocols, then one repair call with the keywords a round
    passes: the output has the input's frames and size."""
    model = load_video_pipeline(spec, "cpu")
    assert isinstance(model, VideoRepairModel)
    assert isinstance(model.config, VideoClipConfig)
    assert model.device == torch.device("cpu")
    assert model.to("cpu") is not None
    model.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 16, 24, 3, generator=generator)
    depth = torch.rand(2, 16, 24, generator=generator) + 1.0
    reference = torch.rand(20, 20, 3, generator=generator)
    out = model(rgb, depth, reference, num_inference_steps=2, timestep_spacing="leading", guidance_scale=2.0,
                guidance_rescale=0.7, generator=generator, output_type="pt", strength=1.0)
    assert isinstance(out, VideoRepairOutput)
    assert tuple(out.rgb.shape) == (2, 16, 24, 3) and tuple(out.depth.shape) == (2, 16, 24)
    assert torch.isfinite(out.rgb).all() and torch.isfinite(out.depth).all()


def test_identity_returns_its_input_and_the_shipped_clip_settings():
    model = IdentityRepair()
    rgb, depth = torch.rand(3, 8, 8, 3), torch.rand(3, 8, 8)
    out = model(rgb, depth, rgb[0], num_inference_steps=25)
    assert torch.equal(out.rgb, rgb) and torch.equal(out.depth, depth) and out.rgb is not rgb
    shipped = load_video_pipeline("default", "cpu").config
    assert (model.config.num_frames, model.config.height, model.config.width) == (
        shipped.num_frames, shipped.height, shipped.width)


def test_an_object_without_the_call_is_not_a_repair_model():
    assert not isinstance(object(), VideoRepairModel)
