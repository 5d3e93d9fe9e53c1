"""The video pipeline's fast path on CPU: SDPA in every attention layer, autocast, VAE frame chunks, a DDIM loop
without host-device synchronisation, and the opt-in torch.compile switch (tiny model; the fixture tests in
test_video_pipeline.py check that the float32 outputs stay the authors')."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor
from transformers.models.clip.modeling_clip import CLIPAttention

from genfusion_ns.video.fast_path import around_sampling_loops, cuda_syncs_raise, non_sdpa_attention
from genfusion_ns.video.pipeline import GenFusionVideoPipeline

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def pipe() -> GenFusionVideoPipeline:
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _inputs(frames: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.rand(frames, 40, 60, 3, generator=generator)
    depth = 1.0 + 3.0 * torch.rand(frames, 40, 60, generator=generator)
    depth[:, :5] = 0.0
    return rgb, depth, torch.rand(48, 64, 3, generator=generator)


def _run(pipe: GenFusionVideoPipeline, frames: int | None = None, **kwargs):
    """One seeded repair of a short random video (eta 1, CFG, guidance rescale, dynamic rescale by default)."""
    settings = {
        "num_inference_steps": 2,
        "timestep_spacing": "uniform_trailing",
        "output_type": "pt",
        **kwargs,
    }
    rgb, depth, reference = _inputs(frames or pipe.config.num_frames)
    return pipe(rgb, depth, reference, generator=torch.Generator().manual_seed(3), **settings)


# ---------------------------------------------------------------------------------------------- SDPA


def test_every_attention_layer_is_an_sdpa_one(pipe, tmp_path):
    """Built and saved-then-loaded pipelines: every diffusers processor and CLIP's implementation is SDPA."""
    assert non_sdpa_attention(pipe.unet) == non_sdpa_attention(pipe.vae) == []
    assert non_sdpa_attention(pipe.image_encoder) == non_sdpa_attention(pipe.image_proj) == []
    pipe.save_pretrained(tmp_path)
    loaded = GenFusionVideoPipeline.from_pretrained(tmp_path)
    for name in ("unet", "vae", "image_encoder", "image_proj"):
        assert non_sdpa_attention(getattr(loaded, name)) == [], name

    # The audit can fail: a classic processor and an eager CLIP are both named.
    layer = next(name for name, m in loaded.unet.named_modules() if isinstance(m, Attention))
    loaded.unet.get_submodule(layer).set_processor(AttnProcessor())
    assert non_sdpa_attention(loaded.unet) == [f"{layer}: AttnProcessor"]
    loaded.image_encoder.config._attn_implementation = "eager"
    assert non_sdpa_attention(loaded.image_encoder) == ["CLIPVisionModel: attn_implementation=eager"]


def test_every_attention_forward_calls_sdpa(pipe, monkeypatch):
    """Behaviour, not only types: during a repair every attention module's forward reaches
    ``F.scaled_dot_product_attention`` (the split cross-attention twice)."""
    calls = [0]
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls[0] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    seen: dict[str, list[int]] = {}
    handles = []
    for component in ("unet", "vae", "image_encoder", "image_proj"):
        for name, module in getattr(pipe, component).named_modules():
            if isinstance(module, (Attention, CLIPAttention)):
                key = f"{component}.{name}"
                seen[key] = []
                handles.append(module.register_forward_pre_hook(lambda m, a, k=key: seen[k].append(calls[0])))
                handles.append(module.register_forward_hook(lambda m, a, o, k=key: seen[k].append(calls[0])))
    try:
        _run(pipe, num_inference_steps=1)
    finally:
        for handle in handles:
            handle.remove()
    assert len(seen) > 30 and all(seen.values()), [k for k, v in seen.items() if not v]
    without_sdpa = [
        k for k, v in seen.items() if any(after == before for before, after in zip(v[::2], v[1::2]))
    ]
    assert without_sdpa == []


# ---------------------------------------------------------------------------------------------- autocast


def test_bf16_autocast_is_close_and_float32_stays_bit_identical(pipe, monkeypatch):
    reference = _run(pipe)
    seen = {}
    linear = next(m for m in pipe.unet.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda m, a, out: seen.update(unet=out.dtype))
    step = pipe.scheduler.__class__.step

    def recording_step(self, model_output, *args, **kwargs):
        seen.setdefault("step", (model_output.dtype, torch.is_autocast_enabled("cpu")))
        return step(self, model_output, *args, **kwargs)

    monkeypatch.setattr(pipe.scheduler.__class__, "step", recording_step)
    assert pipe.autocast_dtype is None  # off by default
    pipe.enable_autocast(torch.bfloat16)
    try:
        low = _run(pipe)
    finally:
        pipe.disable_autocast()
        handle.remove()
    assert seen == {"unet": torch.bfloat16, "step": (torch.float32, False)}  # networks bf16, scheduler fp32
    assert low.latents.dtype == low.rgb.dtype == low.depth.dtype == torch.float32
    assert 0 < (low.latents - reference.latents).abs().max() < 0.5
    torch.testing.assert_close(low.rgb, reference.rgb, atol=0.1, rtol=0)
    after = _run(pipe)
    for name in ("latents", "rgb", "depth"):
        assert torch.equal(getattr(after, name), getattr(reference, name)), name
    with pytest.raises(ValueError, match="autocast dtype"):
        pipe.enable_autocast(torch.float32)


def test_pipe_to_dtype_casts_every_network_and_combines_with_autocast(pipe):
    """diffusers' ``pipe.to(dtype=...)``: the weights change, the sampler and the outputs stay float32."""
    low = GenFusionVideoPipeline.from_config_name("tiny", seed=0).to(dtype=torch.bfloat16)
    low.set_progress_bar_config(disable=True)
    assert {getattr(low, c).dtype for c in ("unet", "vae", "image_encoder", "image_proj")} == {torch.bfloat16}
    reference = _run(pipe).latents
    cast = _run(low).latents
    low.enable_autocast(torch.bfloat16)
    both = _run(low).latents
    assert cast.dtype == both.dtype == torch.float32
    assert 0 < (cast - reference).abs().max() < 0.5 and (both - reference).abs().max() < 0.5


# ---------------------------------------------------------------------------------------------- VAE chunks


@pytest.mark.parametrize("chunk", [1, 3])
def test_vae_sees_at_most_chunk_frames_also_in_residual_decode(pipe, chunk: int):
    frames = pipe.config.num_frames
    sizes: dict[str, list[int]] = {"encoder": [], "decoder": []}
    handles = [
        getattr(pipe.vae, part).register_forward_pre_hook(
            lambda m, args, p=part: sizes[p].append(len(args[0]))
        )
        for part in sizes
    ]
    try:
        _run(pipe, num_inference_steps=1, residual_decode=True, vae_chunk_size=chunk)
    finally:
        for handle in handles:
            handle.remove()
    expected = [chunk] * (frames // chunk) + ([frames % chunk] if frames % chunk else [])
    assert sizes["encoder"] == expected  # the artifact clip
    assert sizes["decoder"] == expected * 2  # the repaired latent, then the unchanged one (residual decode)


# ---------------------------------------------------------------------------------------------- no host sync


class HostSync(AssertionError):
    """A tensor was read back to the host, or host data was copied to a device, inside the sampling loop."""


HOST_READS = (
    "item",
    "tolist",
    "numpy",
    "cpu",
    "nonzero",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__array__",
)


@contextlib.contextmanager
def forbid_host_sync() -> Iterator[None]:
    """Inside the block, every Python-level way a tensor reaches the host raises (``.item()``, ``float(t)``,
    ``if t:``, ``.tolist()``, ``.cpu()``, ``nonzero``, ...), and so does making a tensor from host data or moving
    one to another device. On CPU every tensor is a host tensor, so this is stricter than a GPU needs."""

    def refuse(what: str):
        def raising(*args, **kwargs):
            raise HostSync(f"{what} inside the sampling loop")

        return raising

    def from_tensors_only(function):
        def creating(data, *args, **kwargs):
            if not isinstance(data, torch.Tensor):
                raise HostSync(f"torch.{function.__name__}(host data) inside the sampling loop")
            return function(data, *args, **kwargs)

        return creating

    to, copy_ = torch.Tensor.to, torch.Tensor.copy_

    def same_device_to(self, *args, **kwargs):
        moved = to(self, *args, **kwargs)
        if moved.device != self.device:
            raise HostSync(f"Tensor.to {self.device} -> {moved.device} inside the sampling loop")
        return moved

    def same_device_copy(self, source, *args, **kwargs):
        if source.device != self.device:
            raise HostSync(f"Tensor.copy_ {source.device} -> {self.device} inside the sampling loop")
        return copy_(self, source, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
        patch.setattr(torch, "nonzero", refuse("torch.nonzero"))
        for name in ("tensor", "as_tensor", "from_numpy"):
            patch.setattr(torch, name, from_tensors_only(getattr(torch, name)))
        patch.setattr(torch.Tensor, "to", same_device_to)
        patch.setattr(torch.Tensor, "copy_", same_device_copy)
        yield


def test_the_guard_catches_host_syncs():
    x, meta = torch.ones(()), torch.ones(2, device="meta")
    for sync in (
        lambda: float(x),
        lambda: x.item(),
        lambda: bool(x > 0),
        lambda: int(x),
        lambda: x.tolist(),
        lambda: torch.as_tensor(30),
        lambda: x.to("meta"),
        lambda: meta.copy_(torch.ones(2)),
        lambda: torch.nonzero(x),
    ):
        with forbid_host_sync(), pytest.raises(HostSync):
            sync()
    with forbid_host_sync():
        assert (x.to(torch.float16) + torch.as_tensor(x)).dtype == torch.float32  # same-device work is fine


@pytest.mark.parametrize(
    "settings",
    [
        {
            "num_inference_steps": 4
        },  # "uniform", CFG, guidance rescale, dynamic rescale, eta 1 from a generator
        {
            "num_inference_steps": 10,
            "guidance_scale": 1.0,
            "eta": 0.0,
            "timestep_spacing": "trailing",
            "strength": 0.45,
        },
    ],
)
def test_sampling_loop_reads_nothing_back(pipe, settings):
    """The real tiny pipeline, loop guarded (UNet included), gives exactly the unguarded result."""
    expected = _run(pipe, frames=pipe.config.num_frames + 2, output_type="latent", **settings).latents
    with around_sampling_loops(pipe, forbid_host_sync) as loops:
        guarded = _run(pipe, frames=pipe.config.num_frames + 2, output_type="latent", **settings).latents
    assert len(loops) == 2  # two clips: the guard really wrapped both loops
    assert torch.equal(guarded, expected)


def test_sampling_loop_on_a_device_copies_nothing_per_step():
    """On the meta device (tensors without data: any read of one raises) with a CPU generator and CPU-side
    schedule: nothing crosses between host and device inside the loop, however many steps it runs."""
    pipe = GenFusionVideoPipeline.from_config_name("tiny", device="meta")
    pipe.set_progress_bar_config(disable=True)
    shape = (1, *pipe.latent_shape)
    latents, condition = torch.randn(shape, device="meta"), torch.randn(shape, device="meta")
    context = torch.randn(1, 8, pipe.unet.config.cross_attention_dim, device="meta")
    for steps, step_noises in ((4, None), (10, torch.randn(10, *shape))):
        scheduler = pipe.sampling_scheduler(steps, "trailing", 1.0)
        with around_sampling_loops(pipe, forbid_host_sync) as loops:
            final = pipe.denoise(
                latents,
                condition,
                context,
                context,
                scheduler,
                3.2,
                0.7,
                1.0,
                generator=torch.Generator().manual_seed(0),
                step_noises=step_noises,
            )
        assert loops == [0] and final.shape == shape and final.device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampling_loop_never_synchronises_on_cuda():
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    for dtype in (None, torch.float16):
        if dtype is not None:
            pipe.enable_autocast(dtype)
        with around_sampling_loops(pipe, cuda_syncs_raise) as loops:
            out = _run(pipe, num_inference_steps=4, timestep_spacing="uniform")
        assert loops == [0] and torch.isfinite(out.latents).all()


# ---------------------------------------------------------------------------------------------- torch.compile


def test_torch_compile_is_opt_in_and_wraps_the_unet(monkeypatch):
    pipe = GenFusionVideoPipeline.from_config_name("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)

    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile called without enable_torch_compile")

    monkeypatch.setattr(torch, "compile", no_compile)
    assert pipe.torch_compile_options is None
    plain = _run(pipe, num_inference_steps=4, timestep_spacing="uniform", output_type="latent").latents

    compiled: list[dict] = []
    calls = [0]

    def fake_compile(function, **options):  # records, then runs eagerly: no compiler on CPU in the tests
        compiled.append(options)

        def run(*args, **kwargs):
            calls[0] += 1
            return function(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe.enable_torch_compile(mode="max-autotune-no-cudagraphs")
    options = {"mode": "max-autotune-no-cudagraphs", "fullgraph": False, "dynamic": False}
    assert compiled == [options] and pipe.torch_compile_options == options
    again = _run(pipe, num_inference_steps=4, timestep_spacing="uniform", output_type="latent").latents
    assert calls[0] == 4  # every UNet call of the 4 steps went through the compiled callable
    assert torch.equal(again, plain)


def test_compile_flag_of_the_fusion_pipeline_compiles_only_on_cuda(monkeypatch):
    """``--pipeline.compile-video-unet`` reaches ``enable_torch_compile`` on CUDA and is ignored on CPU."""
    from genfusion_ns.fusion import video_model
    from genfusion_ns.fusion.pipeline import GenFusionPipelineConfig

    assert GenFusionPipelineConfig().compile_video_unet is False
    calls: list[str] = []
    monkeypatch.setattr(GenFusionVideoPipeline, "enable_torch_compile", lambda self, **kw: calls.append("compiled"))
    pipe = video_model.load_video_pipeline("random-tiny", "cpu", compile_unet=True)
    assert calls == []
    video_model.load_video_pipeline("random-tiny", "cpu")
    assert calls == []
    assert video_model.compile_on_cuda(pipe, torch.device("cuda")) and calls == ["compiled"]
    assert not video_model.compile_on_cuda(pipe, torch.device("cpu")) and calls == ["compiled"]
