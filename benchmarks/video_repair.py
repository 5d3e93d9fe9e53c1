"""Benchmark of ``GenFusionVideoPipeline``: seconds and peak memory per repaired clip.

GPU part (skipped with a message without CUDA): the released architecture ("full", random weights: timing does
not depend on the values) on 16-frame clips at 512x320 and 960x512, DDIM 25 steps with CFG (two UNet branches
per step as one batch), in float16 and bfloat16: weights cast, or float32 weights under autocast
(``--autocast``), optionally with the UNet compiled (``--compile``; the warm-up call then includes the
compilation). Target on one H100: >= 4 repaired frames/s at 960x512.
CPU part: the "tiny" architecture on one model-length clip at its native resolution, float32, uncompiled.

A "clip" is a full pipeline call on inputs already at the model resolution: CLIP + resampler for the
reference, VAE encode of the RGB-D render (posterior sample), 25 DDIM steps, VAE decode, metric depth. Peak
memory is the CUDA allocator peak on GPU and the process's peak resident set size (``ru_maxrss``, an upper
bound that includes Python and the libraries) on CPU.

    python benchmarks/video_repair.py                    # GPU part if CUDA is available, then the CPU part
    python benchmarks/video_repair.py --skip-gpu --repeats 3
    python benchmarks/video_repair.py --model /path/to/converted --skip-cpu   # a converted pipeline folder
    python benchmarks/video_repair.py --skip-cpu --dtypes bf16 --autocast --compile
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from genfusion_ns.video.pipeline import GenFusionVideoPipeline

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Result:
    device: str
    model: str
    dtype: str
    frames: int
    width: int
    height: int
    steps: int
    seconds: float
    peak_gb: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds

    def row(self) -> str:
        return (
            f"| {self.device} | {self.model} | {self.dtype} | {self.frames} | {self.width}x{self.height} | "
            f"{self.steps} | {self.seconds:.3f} | {self.frames_per_second:.2f} | {self.peak_gb:.2f} |"
        )


HEADER = (
    "| device | model | dtype | frames/clip | resolution | DDIM steps | s/clip (median) | frames/s "
    "| peak GB |\n"
    "|---|---|---|---:|---|---:|---:|---:|---:|"
)


def make_inputs(frames: int, height: int, width: int, device: torch.device, seed: int = 0):
    """A render-like clip: smooth colours, depth 1..5 m with an empty border, and a reference image."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(frames, height // 16, width // 16, 3, generator=g)
    rgb = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2), size=(height, width), mode="bilinear")
    depth = 1.0 + 4.0 * torch.rand(frames, 1, height // 16, width // 16, generator=g)
    depth = torch.nn.functional.interpolate(depth, size=(height, width), mode="nearest")[:, 0]
    depth[:, : height // 10] = 0.0
    reference = rgb[0].permute(1, 2, 0)
    return (
        rgb.permute(0, 2, 3, 1).contiguous().to(device),
        depth.to(device),
        reference.contiguous().to(device),
    )


def peak_rss_gb() -> float:
    scale = 1024**3 if sys.platform == "darwin" else 1024**2  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def time_clip(
    pipe: GenFusionVideoPipeline, inputs, steps: int, repeats: int, warmup: int
) -> tuple[float, float]:
    """Median seconds per pipeline call and peak memory (GB)."""
    device = inputs[0].device
    cuda = device.type == "cuda"
    timings = []
    for index in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize(device)
            if index == warmup:
                torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        pipe(
            *inputs,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(index),
            output_type="pt",
        )
        if cuda:
            torch.cuda.synchronize(device)
        if index >= warmup:
            timings.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 1024**3 if cuda else peak_rss_gb()
    return statistics.median(timings), peak


def gpu_pipeline(
    model: str | None,
    height: int,
    width: int,
    dtype: torch.dtype,
    autocast: bool = False,
    compile_unet: bool = False,
) -> GenFusionVideoPipeline:
    """The pipeline on CUDA: weights in ``dtype``, or float32 weights autocast to ``dtype`` (fp16/bf16); the UNet
    compiled on request."""
    autocast = autocast and dtype != torch.float32
    weights = torch.float32 if autocast else dtype
    if model:
        pipe = GenFusionVideoPipeline.from_pretrained(model, torch_dtype=weights, height=height, width=width)
        pipe = pipe.to("cuda")
    else:
        pipe = GenFusionVideoPipeline.from_config_name("full", device="cuda", height=height, width=width)
        pipe = pipe.to(dtype=weights)
    if autocast:
        pipe.enable_autocast(dtype)
    if compile_unet:
        pipe.enable_torch_compile()
    return pipe


def setting_name(dtype_name: str, autocast: bool, compile_unet: bool) -> str:
    autocast = autocast and dtype_name != "fp32"
    return dtype_name + (" autocast" if autocast else "") + (" compiled" if compile_unet else "")


def run_gpu(args) -> list[Result]:
    results = []
    for resolution in args.gpu_resolutions:
        width, height = (int(v) for v in resolution.split("x"))
        for dtype_name in args.dtypes:
            pipe = gpu_pipeline(args.model, height, width, DTYPES[dtype_name], args.autocast, args.compile)
            pipe.set_progress_bar_config(disable=True)
            frames = pipe.config.num_frames
            inputs = make_inputs(frames, height, width, torch.device("cuda"))
            seconds, peak = time_clip(pipe, inputs, args.steps, args.repeats, args.warmup)
            results.append(
                Result(
                    "cuda",
                    args.model or "full (random)",
                    setting_name(dtype_name, args.autocast, args.compile),
                    frames,
                    width,
                    height,
                    args.steps,
                    seconds,
                    peak,
                )
            )
            print(results[-1].row(), flush=True)
            del pipe
            torch.cuda.empty_cache()
    return results


def run_cpu(args) -> list[Result]:
    pipe = GenFusionVideoPipeline.from_config_name(args.cpu_config, seed=0)
    pipe.set_progress_bar_config(disable=True)
    frames, height, width = pipe.config.num_frames, pipe.config.height, pipe.config.width
    inputs = make_inputs(frames, height, width, torch.device("cpu"))
    seconds, peak = time_clip(pipe, inputs, args.steps, args.repeats, args.warmup)
    result = Result("cpu", args.cpu_config, "fp32", frames, width, height, args.steps, seconds, peak)
    print(result.row(), flush=True)
    return [result]


def describe_machine() -> str:
    parts = [platform.platform(), f"python {platform.python_version()}", f"torch {torch.__version__}"]
    parts.append(f"{torch.get_num_threads()} torch CPU threads")
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
        parts.append(model)
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (authors' 'uniform' spacing)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--gpu-resolutions", nargs="+", default=["512x320", "960x512"], help="WIDTHxHEIGHT")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=sorted(DTYPES))
    parser.add_argument(
        "--model", default=None, help="converted pipeline folder (default: random 'full' weights)"
    )
    parser.add_argument("--cpu-config", default="tiny", help="named config for the CPU part")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads for the CPU part (0: default)"
    )
    parser.add_argument(
        "--autocast", action="store_true", help="GPU part: float32 weights under autocast to each --dtypes"
    )
    parser.add_argument(
        "--compile", action="store_true", help="GPU part: pipe.enable_torch_compile() (warm-up compiles)"
    )
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"machine: {describe_machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    gpu = not args.skip_gpu and torch.cuda.is_available()
    if not args.skip_gpu and not gpu:
        print("GPU part skipped: CUDA is not available on this machine.")
    print(f"\n{HEADER}", flush=True)
    results = run_gpu(args) if gpu else []
    if not args.skip_cpu:
        results += run_cpu(args)
    for result in results:
        if result.device == "cuda" and (result.width, result.height) == (960, 512):
            verdict = "meets" if result.frames_per_second >= 4.0 else "misses"
            print(
                f"{result.dtype} 960x512: {result.frames_per_second:.2f} frames/s {verdict} "
                "the 4 frames/s target"
            )


if __name__ == "__main__":
    main()
