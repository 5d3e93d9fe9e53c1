"""FLOPs of one full-size GenFusion repair, counted, and the frames/s ceiling they imply on H100 / H200.

One repair = one ``GenFusionVideoPipeline`` call on a 16-frame RGB-D clip at the model resolution: CLIP on the
reference and the grey null image (one batch of 2), the resampler, the VAE encode of the 16 RGB-D frames, 25
DDIM steps ("uniform" spacing) with classifier-free guidance (both branches as one batch-2 UNet call per step)
and the VAE decode of the 16 frames.

How it is counted: the released architecture (``from_config_name("full")``) is built on the ``meta`` device,
so no weights are allocated, and the real pipeline call runs under
``torch.utils.flop_counter.FlopCounterMode`` (1 FLOP = one multiply or one add; matmuls, convolutions and
attention; elementwise ops, norms and softmax are not counted). FlopCounterMode derives every count from the
tensor shapes only, so meta tensors give exactly the counts of a real run. Attention is forced onto PyTorch's
math SDPA path, which is made of counted ``bmm``s: on CPU the fused SDPA kernel is not in FlopCounterMode's
registry and would be left out. ``--verify`` checks both claims on the "tiny" architecture (real weights on
CPU vs meta: the counts must be equal).

The ceiling divides the peak dense bf16/fp16 tensor throughput by the counted FLOPs: a computed bound at 100%
utilisation, not a measurement.

    python benchmarks/repair_flops.py                      # 512x320 (authors' working size), 25 steps, CFG
    python benchmarks/repair_flops.py --size 512x320 960x512 --json flops.json
    python benchmarks/repair_flops.py --verify             # meta == CPU on the tiny architecture first
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genfusion_ns.video import GenFusionVideoPipeline

# Peak dense (no sparsity) bf16/fp16 tensor-core throughput, FLOP/s. The H200 has the H100 SXM's compute.
PEAKS = {"H100 SXM": 989e12, "H200": 989e12}
COMPONENTS = ("unet", "vae_encode", "vae_decode", "clip", "resampler")
MODULES = ("unet", "vae", "image_encoder", "image_proj")


@dataclass
class RepairFlops:
    """Counted FLOPs of one repair call, by component."""

    config: str
    device: str
    frames: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    unet_calls: int = 0
    unet_batch: int = 0
    flops: dict[str, int] = field(default_factory=dict)
    total: int = 0
    count_seconds: float = 0.0

    @property
    def other(self) -> int:
        """FLOPs outside the five components (the scheduler's arithmetic is elementwise: expected 0)."""
        return self.total - sum(self.flops.values())

    def frames_per_second_ceiling(self, peak: float) -> float:
        return self.frames * peak / self.total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["other"] = self.other
        data["ceilings"] = {
            gpu: {
                "peak_tflops": peak / 1e12,
                "seconds_per_clip": self.total / peak,
                "frames_per_second": self.frames_per_second_ceiling(peak),
            }
            for gpu, peak in PEAKS.items()
        }
        return data


@contextlib.contextmanager
def attributed(pipe: GenFusionVideoPipeline, counter: FlopCounterMode, result: RepairFlops) -> Iterator[None]:
    """Credit the counter's increments to the component that was running (instance attributes shadow the
    methods for the duration, so the pipeline's own code path is unchanged)."""
    result.flops = dict.fromkeys(COMPONENTS, 0)

    def wrap(owner: Any, method: str, component: str) -> Callable[..., Any]:
        original = getattr(owner, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            before = counter.get_total_flops()
            out = original(*args, **kwargs)
            result.flops[component] += counter.get_total_flops() - before
            if component == "unet":
                result.unet_calls += 1
                result.unet_batch = int((args[0] if args else kwargs["sample"]).shape[0])
            return out

        setattr(owner, method, counted)
        return original

    patched = [
        (pipe.unet, "forward", "unet"),
        (pipe.vae, "encode", "vae_encode"),
        (pipe.vae, "decode", "vae_decode"),
        (pipe, "reference_tokens", "clip"),  # CLIP and the antialias blur of its input
        (pipe.image_proj, "forward", "resampler"),
    ]
    for owner, method, component in patched:
        wrap(owner, method, component)
    try:
        yield
    finally:
        for owner, method, _ in patched:
            delattr(owner, method)  # back to the class's method


def build(
    config: str, device: str, width: int | None = None, height: int | None = None
) -> GenFusionVideoPipeline:
    """The named architecture with random weights; on ``meta`` every parameter and buffer holds no storage."""
    settings = {"width": width, "height": height} if width and height else {}
    pipe = GenFusionVideoPipeline.from_config_name(config, seed=0, device=device, **settings)
    if device == "meta":
        for name in MODULES:
            getattr(pipe, name).to("meta")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_repair(
    config: str = "full",
    device: str = "meta",
    width: int | None = 512,
    height: int | None = 320,
    steps: int = 25,
    guidance_scale: float = 3.2,
) -> RepairFlops:
    """Count one repair of one model-length clip at ``width`` x ``height`` (None: the config's native
    size)."""
    pipe = build(config, device, width, height)
    frames, height, width = pipe.config.num_frames, pipe.config.height, pipe.config.width
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(frames, height, width, 3, generator=generator)
    depth = 1.0 + 4.0 * torch.rand(frames, height, width, generator=generator)
    reference = torch.rand(height, width, 3, generator=generator)
    result = RepairFlops(config, device, frames, width, height, steps, guidance_scale)
    counter = FlopCounterMode(display=False)
    started = time.perf_counter()
    with sdpa_kernel(SDPBackend.MATH), counter, attributed(pipe, counter, result):
        pipe(
            rgb, depth, reference, num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt"
        )
    result.count_seconds = time.perf_counter() - started
    result.total = counter.get_total_flops()
    return result


def verify(steps: int) -> tuple[int, int]:
    """Totals of the tiny architecture with real weights on CPU and on meta (must be equal)."""
    cpu = count_repair("tiny", "cpu", None, None, steps)
    meta = count_repair("tiny", "meta", None, None, steps)
    return cpu.total, meta.total


def markdown(result: RepairFlops) -> str:
    names = {
        "unet": f"UNet ({result.unet_calls} calls, batch {result.unet_batch})",
        "vae_encode": f"VAE encode ({result.frames} frames)",
        "vae_decode": f"VAE decode ({result.frames} frames)",
        "clip": "CLIP ViT-H/14 + input blur (reference, null image)",
        "resampler": "resampler",
    }
    title = (
        f"component ({result.width}x{result.height}, {result.frames} frames, {result.steps} DDIM steps, "
        f"CFG {result.guidance_scale})"
    )
    lines = [f"| {title} | TFLOP per clip | share |", "|---|---:|---:|"]
    for key in COMPONENTS:
        lines.append(
            f"| {names[key]} | {result.flops[key] / 1e12:.3f} | "
            f"{100 * result.flops[key] / result.total:.2f}% |"
        )
    if result.other:
        lines.append(f"| other | {result.other / 1e12:.3f} | {100 * result.other / result.total:.2f}% |")
    lines.append(f"| **total** | **{result.total / 1e12:.2f}** | 100% |")
    lines += [
        "",
        "| GPU | peak dense bf16/fp16 | bound: s per clip | ceiling frames/s (100% utilisation) |",
        "|---|---:|---:|---:|",
    ]
    for gpu, peak in PEAKS.items():
        lines.append(
            f"| {gpu} | {peak / 1e12:.0f} TFLOP/s | {result.total / peak:.3f} | "
            f"{result.frames_per_second_ceiling(peak):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", nargs="+", default=["512x320"], help="WIDTHxHEIGHT of the model (default 512x320)"
    )
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps ('uniform' spacing)")
    parser.add_argument("--guidance-scale", type=float, default=3.2, help="CFG weight (> 1: both branches)")
    parser.add_argument("--config", default="full", help="named architecture (default: the released 'full')")
    parser.add_argument("--verify", action="store_true", help="first check meta == CPU counts on 'tiny'")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    args = parser.parse_args()

    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; {platform.platform()}; torch {torch.__version__}")
    if args.verify:
        cpu_total, meta_total = verify(args.steps)
        verdict = "equal" if cpu_total == meta_total else "DIFFERENT"
        print(
            f"verify (tiny, {args.steps} steps): CPU real weights {cpu_total:,} FLOP, "
            f"meta {meta_total:,} FLOP: "
            f"{verdict}\n"
        )
        if cpu_total != meta_total:
            raise SystemExit("meta and CPU counts differ: the meta count cannot be trusted")
    results = []
    for size in args.size:
        width, height = (int(v) for v in size.lower().split("x"))
        result = count_repair(args.config, "meta", width, height, args.steps, args.guidance_scale)
        results.append(result)
        print(markdown(result))
        print(f"\n(counted on meta in {result.count_seconds:.0f} s)\n")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2))


if __name__ == "__main__":
    main()
