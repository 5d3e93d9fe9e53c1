"""Every GPU figure of the project in one command: ``python benchmarks/gpu_check.py --out gpu_report``.

Why one script: a GPU machine is lent rarely and briefly, so the measurements must be ready to run unattended
and to survive their own failures. Each part runs in its own subprocess (``--run-part NAME``) under its own
time limit, inside an overall budget (default 470 s, so the whole fits in 8 minutes on one H100/H200-class
GPU); a part that fails or times out is recorded and the next one runs. Without CUDA every GPU part is
recorded as "skipped: no CUDA" and the command still exits 0, which is how the plumbing is tested on CPU.

Parts, in order (time limit in seconds):

* ``env`` (30, also on CPU): versions, the GPU, whether CUDA is visible.
* ``gsplat-kernels`` (150): load gsplat 1.4.0's CUDA extension; the first run on a machine JIT-compiles it
  (needs ``nvcc``; minutes; cached in torch's extensions folder, so a rerun takes seconds).
* ``parity`` (60): ``python -m pytest -m gpu tests/test_rasterize_gsplat_parity.py -q -rs``, then the observed
  gsplat-vs-torch errors on the same scenes (the test only asserts them).
* ``repair`` (120): the full-size video model, random weights, one 16-frame 512x320 RGB-D clip, 25 DDIM steps,
  CFG 3.2, on the fast path (see ``genfusion_ns/video/fast_path.py``): weights in fp16, in bf16, and float32
  weights under bf16 autocast (one 1-step warm-up call first); then fp16 at the native 960x512. Also records
  the attention layers not on SDPA (expected: none) and whether the DDIM loop synchronises with the GPU
  (``torch.cuda.set_sync_debug_mode("error")`` around the loop; expected: none).
* ``2dgs`` (170): ``ns-train genfusion-2dgs`` (7000 steps, 3 training views) on a 512x320 ``genfusion-scene``,
  then ``ns-eval``: both in-process through ``genfusion_ns.runner`` for the CUDA allocator's peak.
* ``full-model`` (90): the full-size pipeline (random weights, 512x320 settings) saved in fp16 for the two
  parts below (kept in ``--out``: a rerun reuses it).
* ``fusion`` (150): ``ns-train genfusion`` with that model, 600 steps, repair rounds at 200 and 400; checks
  that the model is offloaded after each round and the allocated memory returns to where it was.
* ``train`` (150): a 16-frame clip data set from ``genfusion-make-data``, then 20 steps of ``accelerate launch
  -m diffusion_train.train`` on the full-size model (bf16, gradient checkpointing).
* ``repair-compile`` (240, last, so it runs only with time left; ``--parts repair-compile`` runs it alone): the
  ``repair`` part's fp16 512x320 clip after ``pipe.enable_torch_compile()``; the first call's time includes
  the compilation.

Each part's peak GPU memory is also sampled with ``nvidia-smi`` (device-wide, includes the CUDA context).
Writes ``report.json``, ``report.md``, ``logs/<part>.log`` and ``parts/<part>.json`` under ``--out``; prints
the table. Exit status: 0 when every part that ran passed (or every GPU part was skipped for want of CUDA), 1
otherwise.

    python benchmarks/gpu_check.py --out gpu_report
    python benchmarks/gpu_check.py --out gpu_report --parts fusion train     # rerun two parts
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import Self

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
MARKER = ".gpu_check"
RESULT_ENV = "GPU_CHECK_RESULT"
DEFAULT_BUDGET_S = 470.0
MIN_PART_S = 15.0  # a part is not started with less time than this left in the budget
KILL_GRACE_S = 5.0

# The authors' working size (stage-1 training, 320x512) for scenes, the repair and the saved model.
WIDTH, HEIGHT, FRAMES = 512, 320, 16
DDIM_STEPS, GUIDANCE = 25, 3.2
REPAIR_REPEATS = 2
SCENE = "scene-512x320"
SCENE_ARGS = [
    "--views",
    "24",
    "--train-views",
    "3",
    "--resolution",
    str(HEIGHT),
    "--aspect",
    f"{WIDTH / HEIGHT:g}",
    "--kind",
    "room",
    "--seed",
    "1",
]
TRAIN_SCENE = "scene-train-16"
TRAIN_SCENE_ARGS = [
    "--views",
    "16",
    "--train-views",
    "3",
    "--resolution",
    "40",
    "--aspect",
    "1.6",
    "--seed",
    "2",
]
MODEL = "genfusion-full-512x320"
FUSION_STEPS, FUSION_START, FUSION_EVERY = 600, 200, 200
TRAIN_STEPS = 20
OFFLOAD_TOLERANCE_MIB = 256.0
# Counted by benchmarks/repair_flops.py (2026-12-03, docs/benchmarks.md): one 16-frame repair, 25 steps, CFG.
REPAIR_TFLOP = {"512x320": 677.37}
PEAK_TFLOPS = 989.0  # H100 SXM / H200 dense bf16/fp16


# ----------------------------------------------------------------------------------------------- part runner


@dataclass
class Part:
    """One measurement: a command run in its own process group under ``limit_s``."""

    name: str
    title: str
    limit_s: float
    argv: list[str]
    commands: str = ""
    """The user-facing commands the part runs or mirrors (for the report)."""
    needs_cuda: bool = True
    summarize: Callable[[dict[str, Any]], str] | None = None


@dataclass
class PartResult:
    name: str
    title: str
    status: str
    """"ok", "failed (exit N)", "timed out after N s", "skipped: no CUDA" or "skipped: no time left ..."."""
    limit_s: float
    wall_s: float = 0.0
    returncode: int | None = None
    peak_gpu_mib: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    error: str = ""
    log: str = ""
    commands: str = ""
    needs_cuda: bool = True

    @property
    def passed(self) -> bool:
        return self.status == "ok" or self.status == "skipped: no CUDA"


class GpuMemorySampler:
    """Peak ``memory.used`` of the GPUs (MiB, device-wide) from ``nvidia-smi -lms``; a no-op without it."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.peak: float | None = None
        self._process: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.interval_ms = interval_ms

    def __enter__(self) -> Self:
        if shutil.which("nvidia-smi") is None:
            return self
        self._process = subprocess.Popen(
            [
                "nvidia-smi",
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                f"-lms={self.interval_ms}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                value = float(line.strip())
            except ValueError:
                continue
            self.peak = value if self.peak is None else max(self.peak, value)

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the part's own process group (its children: pytest, accelerate, ...)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _last_error_line(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"(Error|error|FAILED|failed|Exception|Traceback|SystemExit)", line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def run_part(part: Part, out: Path, deadline: float, cuda: bool) -> PartResult:
    """Run one part (or record why not); never raises for the part's own failures."""
    result = PartResult(
        part.name, part.title, "", part.limit_s, commands=part.commands, needs_cuda=part.needs_cuda
    )
    if part.needs_cuda and not cuda:
        result.status = "skipped: no CUDA"
        return result
    remaining = deadline - time.monotonic()
    if remaining < MIN_PART_S:
        result.status = f"skipped: no time left in the budget ({max(0.0, remaining):.0f} s)"
        return result
    limit = min(part.limit_s, remaining)
    result.limit_s = round(limit, 1)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    log_path, metrics_path = out / "logs" / f"{part.name}.log", out / "parts" / f"{part.name}.json"
    metrics_path.unlink(missing_ok=True)
    result.log = str(log_path.relative_to(out))
    env = {**os.environ, RESULT_ENV: str(metrics_path), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    with open(log_path, "w") as log, GpuMemorySampler() if part.needs_cuda else _NullSampler() as sampler:
        log.write(f"$ {' '.join(part.argv)}\n")
        log.flush()
        process = subprocess.Popen(
            part.argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            result.returncode = process.wait(timeout=limit)
            result.status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
        except subprocess.TimeoutExpired:
            _kill_group(process)
            result.status = f"timed out after {limit:.0f} s"
    result.wall_s = round(time.monotonic() - started, 1)
    result.peak_gpu_mib = sampler.peak
    if metrics_path.is_file():
        try:
            result.metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    if result.status != "ok":
        result.error = str(result.metrics.get("error", "")) or _last_error_line(_tail(log_path))
    try:
        result.summary = (part.summarize or _default_summary)(result.metrics)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # a summary must never lose the result
        result.summary = f"(summary failed: {error})"
    return result


class _NullSampler:
    peak = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def run_parts(
    parts: Sequence[Part],
    out: Path,
    budget_s: float,
    cuda: bool,
    on_result: Callable[[PartResult], None] | None = None,
) -> list[PartResult]:
    """Run the parts in order inside one budget; each result is reported to ``on_result`` as it comes."""
    deadline = time.monotonic() + budget_s
    results = []
    for part in parts:
        results.append(run_part(part, out, deadline, cuda))
        if on_result is not None:
            on_result(results[-1])
    return results


def _default_summary(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in metrics.items() if not isinstance(v, (dict, list)))[:200]


# ----------------------------------------------------------------------------------------------- part helpers


class Recorder:
    """A part's results, rewritten after every value so a timed-out part keeps what it had measured."""

    def __init__(self) -> None:
        path = os.environ.get(RESULT_ENV)
        self.path = Path(path) if path else None
        self.data: dict[str, Any] = {}

    def __call__(self, **values: Any) -> None:
        self.data.update(values)
        print("result:", json.dumps(values, default=str), flush=True)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2, default=str))
            tmp.replace(self.path)


def _script(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def _run(argv: list[str]) -> float:
    """Run a helper command (output into the part's log); seconds taken. Raises on failure."""
    print("$", " ".join(argv), flush=True)
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True)
    return time.perf_counter() - started


def _work(out: Path) -> Path:
    path = out / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_scene(out: Path, name: str, args: list[str], rec: Recorder) -> Path:
    """A ``genfusion-scene`` dataset under ``out/work`` (reused by later parts and reruns)."""
    folder = _work(out) / name
    if (folder / "transforms.json").is_file():
        rec(**{f"scene {name}": f"reused {folder}"})
        return folder
    overwrite = ["--overwrite"] if folder.exists() else []
    seconds = _run([_script("genfusion-scene"), "--out", str(folder), *args, *overwrite])
    rec(**{f"scene {name}": f"generated in {seconds:.1f} s"})
    return folder


def model_folder(out: Path) -> Path:
    return _work(out) / MODEL


def require_model(out: Path) -> Path:
    folder = model_folder(out)
    if not (folder / "model_index.json").is_file():
        raise SystemExit(
            f"{folder} is missing: this part needs the full-model part first "
            "(python benchmarks/gpu_check.py --out ... --parts full-model ...)"
        )
    return folder


def _gib(num_bytes: float) -> float:
    return round(num_bytes / 1024**3, 3)


def _mib(num_bytes: float) -> float:
    return round(num_bytes / 1024**2, 1)


def tensorboard_scalars(folder: Path, tag: str) -> list[float]:
    """Values of one scalar in the tensorboard event files under ``folder`` (empty if unreadable)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return []
    values: list[float] = []
    for events in sorted(folder.rglob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            values += [event.value for event in accumulator.Scalars(tag)]
    return values


# ----------------------------------------------------------------------------------------------- the parts


def part_env(out: Path, rec: Recorder) -> None:
    """Versions and the device: the context every other figure needs."""
    from importlib import metadata

    import torch

    packages = {}
    for name in ("nerfstudio", "gsplat", "diffusers", "transformers", "accelerate", "numba"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    rec(
        python=platform.python_version(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        packages=packages,
    )
    if torch.cuda.is_available():
        rec(gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
        )
        rec(nvidia_smi=query.stdout.strip() or query.stderr.strip())


def part_gsplat_kernels(out: Path, rec: Recorder) -> None:
    """gsplat JIT-compiles its CUDA extension on first use: do it here, under its own limit, not inside a
    run."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        extensions_dir: str | None = _get_build_directory("gsplat_cuda", verbose=False)
    except (ImportError, AttributeError, TypeError, OSError):  # a private torch helper: only informative
        extensions_dir = None
    rec(nvcc=shutil.which("nvcc"), extensions_dir=extensions_dir)
    started = time.perf_counter()
    from gsplat.cuda._backend import _C

    rec(load_s=round(time.perf_counter() - started, 1), loaded=_C is not None)
    if _C is None:
        raise SystemExit(
            "gsplat's CUDA extension did not load (see the log above): the reconstruction parts fall "
            "back to the PyTorch rasterizer"
        )


def _parity_errors() -> dict[str, Any]:
    """The gsplat-vs-torch differences the parity test asserts on, measured on its own scenes."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location(
        "gsplat_parity", ROOT / "tests" / "test_rasterize_gsplat_parity.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    errors = {}
    for sh_degree, cameras in ((None, 1), (3, 2)):
        scene = module._scene(300, 80, 64, cameras, seed=0, sh_degree=sh_degree)
        background = torch.rand(cameras, 3, device="cuda")
        out_g, grads_g = module._render(scene, "gsplat", sh_degree, background)
        out_t, grads_t = module._render(scene, "torch", sh_degree, background)
        alpha = out_g.alpha[..., 0]
        covered = {
            "depth_expected": alpha > 0.05,
            "surf_normals": -torch.nn.functional.max_pool2d(-alpha[:, None], 3, 1, 1)[:, 0] > 0.5,
        }
        forward = {}
        for name in module.FIELDS:
            a, b = getattr(out_g, name), getattr(out_t, name)
            if name in covered:
                a, b = a[covered[name]], b[covered[name]]
            forward[name] = float((a - b).abs().max())
        gradients = {
            name: float(
                (grads_g[name] - grads_t[name]).abs().max() / grads_g[name].abs().max().clamp_min(1e-8)
            )
            for name in module.PARAMS
        }
        visible = out_g.radii > 0
        cosine = torch.nn.functional.cosine_similarity(
            out_g.means2d.grad[visible].flatten(), out_t.means2d.grad[visible].flatten(), dim=0
        )
        errors[f"sh={sh_degree},cameras={cameras}"] = {
            "forward_max_abs (tol 1e-3)": forward,
            "gradient_max_rel (tol 2e-2)": gradients,
            "means2d_grad_cosine (min 0.9)": float(cosine),
            "radii_equal": bool(torch.equal(out_g.radii, out_t.radii)),
        }
    return errors


def part_parity(out: Path, rec: Recorder) -> None:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "gpu",
        "tests/test_rasterize_gsplat_parity.py",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    test = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    print(test.stdout, test.stderr, flush=True)
    lines = [line for line in test.stdout.splitlines() if line.strip()]
    rec(
        pytest_rc=test.returncode,
        pytest_summary=lines[-1] if lines else "",
        pytest_s=round(time.perf_counter() - started, 1),
    )
    try:
        rec(errors=_parity_errors())
    except Exception as error:  # noqa: BLE001 -- the measurement is extra; the test's verdict stands
        rec(errors_unavailable=f"{type(error).__name__}: {error}")
    if test.returncode != 0:
        raise SystemExit(f"the parity tests failed: {rec.data['pytest_summary']}")


def _repair_inputs(height: int, width: int, device: str) -> tuple[Any, Any, Any]:
    """A render-like clip: smooth colours, depth 1..5 m with an empty band at the top, and a reference
    image."""
    import torch

    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(FRAMES, 3, height // 16, width // 16, generator=g)
    rgb = torch.nn.functional.interpolate(rgb, size=(height, width), mode="bilinear")
    depth = 1.0 + 4.0 * torch.rand(FRAMES, 1, height // 16, width // 16, generator=g)
    depth = torch.nn.functional.interpolate(depth, size=(height, width), mode="nearest")[:, 0]
    depth[:, : height // 10] = 0.0
    rgb = rgb.permute(0, 2, 3, 1).contiguous()
    return rgb.to(device), depth.to(device), rgb[0].clone().to(device)


def _time_repair(pipe: Any, inputs: tuple[Any, Any, Any]) -> dict[str, Any]:
    """One untimed 1-step call (allocations, kernel selection), then ``REPAIR_REPEATS`` timed full repairs."""
    import torch

    started = time.perf_counter()
    pipe(*inputs, num_inference_steps=1, guidance_scale=GUIDANCE, output_type="pt")  # warm-up step
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - started
    torch.cuda.reset_peak_memory_stats()
    seconds, finite = [], True
    for repeat in range(REPAIR_REPEATS):
        torch.cuda.synchronize()
        start = time.perf_counter()
        result = pipe(
            *inputs,
            num_inference_steps=DDIM_STEPS,
            guidance_scale=GUIDANCE,
            output_type="pt",
            generator=torch.Generator(device="cuda").manual_seed(repeat),
        )
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        finite = finite and bool(torch.isfinite(result.rgb).all())
    per_clip = statistics.median(seconds)
    run = {
        "s_per_clip": round(per_clip, 3),
        "frames_per_s": round(FRAMES / per_clip, 2),
        "peak_allocated_gib": _gib(torch.cuda.max_memory_allocated()),
        "peak_reserved_gib": _gib(torch.cuda.max_memory_reserved()),
        "timings_s": [round(s, 3) for s in seconds],
        "warmup_s": round(warmup_s, 2),
        "finite_output": finite,
    }
    size = f"{inputs[0].shape[2]}x{inputs[0].shape[1]}"
    if size in REPAIR_TFLOP:
        achieved = REPAIR_TFLOP[size] / per_clip
        run["achieved_tflops"] = round(achieved, 1)
        run["utilisation_of_989"] = round(achieved / PEAK_TFLOPS, 3)
    return run


def _loop_syncs(pipe: Any, inputs: tuple[Any, Any, Any]) -> str:
    """``"none"`` when a 2-step repair's DDIM loops run under ``torch.cuda.set_sync_debug_mode("error")``, else
    the error: the loop is meant to queue its steps without waiting on the GPU."""
    from genfusion_ns.video.fast_path import around_sampling_loops, cuda_syncs_raise

    try:
        with around_sampling_loops(pipe, cuda_syncs_raise):
            pipe(*inputs, num_inference_steps=2, guidance_scale=GUIDANCE, timestep_spacing="trailing")
    except RuntimeError as error:
        return str(error).splitlines()[0][:300]
    return "none"


def _full_pipeline(width: int, height: int) -> tuple[Any, float]:
    """The full-size pipeline with random weights on CUDA (float32), and the seconds it took to build."""
    from genfusion_ns.video import GenFusionVideoPipeline

    started = time.perf_counter()
    pipe = GenFusionVideoPipeline.from_config_name("full", seed=0, device="cuda", width=width, height=height)
    pipe.set_progress_bar_config(disable=True)
    return pipe, round(time.perf_counter() - started, 1)


def part_repair(out: Path, rec: Recorder) -> None:
    """Seconds, frames/s and allocator peak of one repaired clip (random weights: the speed does not depend on
    them) on the fast path: SDPA in every attention layer (checked), both CFG branches in one UNet batch, VAE
    passes of ``vae_chunk_size`` frames, a DDIM loop that never synchronises (checked), and the networks in
    fp16 / bf16: weights cast (``pipe.to(dtype=...)``), or float32 weights under bf16 autocast."""
    import torch

    from genfusion_ns.video.fast_path import non_sdpa_attention

    runs: dict[str, Any] = {}
    for (width, height), names in (
        ((WIDTH, HEIGHT), ("fp16", "bf16", "bf16-autocast")),
        ((960, 512), ("fp16",)),
    ):
        size = f"{width}x{height}"
        pipe, build_s = _full_pipeline(width, height)
        if not runs:
            rec(non_sdpa_layers=[f"{c}.{layer}" for c in ("unet", "vae", "image_encoder", "image_proj")
                                 for layer in non_sdpa_attention(getattr(pipe, c))])
        inputs = _repair_inputs(height, width, "cuda")
        for name in names:
            if name.endswith("-autocast"):
                pipe.to(device="cuda", dtype=torch.float32)
                pipe.enable_autocast(torch.bfloat16)
            else:
                pipe.to(device="cuda", dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[name])
            torch.cuda.empty_cache()
            runs[f"{name} {size}"] = {**_time_repair(pipe, inputs), "build_s": build_s}
            rec(runs=runs)
            if "loop_host_syncs" not in rec.data:
                rec(loop_host_syncs=_loop_syncs(pipe, inputs))
        del pipe, inputs
        torch.cuda.empty_cache()


def part_repair_compile(out: Path, rec: Recorder) -> None:
    """The ``repair`` part's fp16 512x320 run with the UNet compiled (``pipe.enable_torch_compile()``): the
    compile time (inside the first call) and the seconds per clip after it."""
    import torch

    if os.environ.get("TORCHDYNAMO_DISABLE") == "1":
        raise SystemExit("TORCHDYNAMO_DISABLE=1 is set: torch.compile would not compile; unset it for this part")
    pipe, build_s = _full_pipeline(WIDTH, HEIGHT)
    pipe.to(dtype=torch.float16)
    pipe.enable_torch_compile()
    rec(build_s=build_s, options=pipe.torch_compile_options)
    inputs = _repair_inputs(HEIGHT, WIDTH, "cuda")
    rec(run={**_time_repair(pipe, inputs), "mode": "fp16 + torch.compile"})


def part_2dgs(out: Path, rec: Recorder) -> None:
    """The authors' sparse-view reconstruction recipe at their working size, then its held-out scores."""
    import torch

    from genfusion_ns.runner import evaluate_run, train_in_process, trainer_config

    scene = ensure_scene(out, SCENE, SCENE_ARGS, rec)
    config = trainer_config(
        "genfusion-2dgs",
        scene,
        _work(out) / "runs",
        "gpu-check",
        time.strftime("%Y%m%d-%H%M%S"),
        device="cuda",
    )
    steps = int(config.max_num_iterations)
    rec(steps=steps, run_dir=str(config.get_base_dir()))
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    config_path = train_in_process(config)
    train_s = time.perf_counter() - started
    iteration = tensorboard_scalars(config.get_base_dir(), "Train Iter (time)")
    rec(
        train_s=round(train_s, 1),
        ms_per_step_wall=round(1000 * train_s / steps, 2),
        ms_per_step_nerfstudio=round(1000 * statistics.median(iteration), 2) if iteration else None,
        peak_allocated_gib=_gib(torch.cuda.max_memory_allocated()),
    )
    started = time.perf_counter()
    evaluation = evaluate_run(config_path)
    rec(
        eval_s=round(time.perf_counter() - started, 1),
        num_surfels=evaluation.num_surfels,
        **{k: round(v, 4) for k, v in evaluation.metrics.items()},
    )


def part_full_model(out: Path, rec: Recorder) -> None:
    """The full-size pipeline with random weights at 512x320, saved once in fp16 (write, then rename)."""
    import torch

    from genfusion_ns.video import GenFusionVideoPipeline

    folder = model_folder(out)
    if (folder / "model_index.json").is_file():
        rec(folder=str(folder), reused=True)
        return
    started = time.perf_counter()
    pipe = GenFusionVideoPipeline.from_config_name("full", seed=0, device="cuda", width=WIDTH, height=HEIGHT)
    pipe.to(dtype=torch.float16)
    params = sum(
        p.numel()
        for name in ("unet", "vae", "image_encoder", "image_proj")
        for p in getattr(pipe, name).parameters()
    )
    rec(build_s=round(time.perf_counter() - started, 1), params=params)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    pipe.save_pretrained(str(partial), safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    rec(save_s=round(time.perf_counter() - started, 1), size_gib=_gib(size), folder=str(folder), reused=False)


def part_fusion(out: Path, rec: Recorder) -> None:
    """Two repair rounds with the full-size model: the model must leave the GPU after each round and the
    reconstruction's allocated memory come back to where it was."""
    import torch

    from genfusion_ns.fusion.pipeline import GenFusionPipeline
    from genfusion_ns.runner import train_in_process, trainer_config

    folder = require_model(out)
    scene = ensure_scene(out, SCENE, SCENE_ARGS, rec)
    rounds: list[dict[str, Any]] = []
    peaks = [0]
    original = GenFusionPipeline.run_round

    def measured_round(self: Any, step: int) -> bool:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        peaks[0] = max(peaks[0], torch.cuda.max_memory_allocated())
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        completed = False
        try:
            completed = original(self, step)
            return completed
        finally:
            torch.cuda.synchronize()
            after = torch.cuda.memory_allocated()
            video = getattr(self, "_video", None)
            device = str(getattr(video[0], "device", "unknown")) if video else "unknown"
            rounds.append(
                {
                    "step": step,
                    "completed": completed,
                    "seconds": round(time.perf_counter() - started, 1),
                    "allocated_before_mib": _mib(before),
                    "allocated_after_mib": _mib(after),
                    "delta_mib": _mib(after - before),
                    "round_peak_mib": _mib(torch.cuda.max_memory_allocated()),
                    "model_device_after": device,
                }
            )
            peaks[0] = max(peaks[0], torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
            rec(rounds=rounds)

    GenFusionPipeline.run_round = measured_round
    config = trainer_config(
        "genfusion",
        scene,
        _work(out) / "runs",
        "gpu-check",
        time.strftime("%Y%m%d-%H%M%S"),
        device="cuda",
        max_steps=FUSION_STEPS,
        video_model=str(folder),
    )
    config.pipeline.fusion_start, config.pipeline.fusion_every = FUSION_START, FUSION_EVERY
    started = time.perf_counter()
    train_in_process(config)
    peaks[0] = max(peaks[0], torch.cuda.max_memory_allocated())
    offloaded = [
        r["completed"]
        and r["model_device_after"] in ("cpu", "unknown")
        and abs(r["delta_mib"]) <= OFFLOAD_TOLERANCE_MIB
        for r in rounds
    ]
    rec(
        train_s=round(time.perf_counter() - started, 1),
        steps=FUSION_STEPS,
        peak_allocated_mib=_mib(peaks[0]),
        repair_s=round(sum(r["seconds"] for r in rounds), 1),
        offloaded=bool(offloaded) and all(offloaded),
    )
    if len(rounds) != 2 or not all(offloaded):
        raise SystemExit(
            f"expected 2 completed rounds after which the model is off the GPU and the allocated memory "
            f"is back within {OFFLOAD_TOLERANCE_MIB:.0f} MiB; got {rounds}"
        )


def part_train(out: Path, rec: Recorder) -> None:
    """20 optimizer steps of the video-model trainer on the full-size model (s/step from its per-step log
    lines; memory from the nvidia-smi sampler of the parent)."""
    folder = require_model(out)
    data = _work(out) / "train-data"
    if not (data / "manifest.json").is_file():
        scene = ensure_scene(out, TRAIN_SCENE, TRAIN_SCENE_ARGS, rec)
        seconds = _run(
            [
                _script("genfusion-make-data"),
                "--scenes",
                str(scene),
                "--output",
                str(data),
                "--max-steps",
                "20",
                "--clip-length",
                str(FRAMES),
                "--device",
                "cuda",
            ]
        )
        rec(make_data_s=round(seconds, 1))
    run_dir = _work(out) / "train-run"
    command = [
        _script("accelerate"),
        "launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
        "-m",
        "diffusion_train.train",
        "--data",
        str(data),
        "--output",
        str(run_dir),
        "--init",
        str(folder),
        "--max-steps",
        str(TRAIN_STEPS),
        "--gradient-accumulation-steps",
        "1",
        "--mixed-precision",
        "bf16",
        "--gradient-checkpointing",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1000",
        "--sample-every",
        "0",
        "--sample-steps",
        "2",
        "--save-dtype",
        "float16",
        "--overwrite",
    ]
    print("$", " ".join(command), flush=True)
    stamps: dict[int, float] = {}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        match = re.search(r"step (\d+): loss", line)
        if match:
            stamps[int(match.group(1))] = time.perf_counter()
            if len(stamps) >= 3:
                steps = sorted(stamps)
                gaps = [
                    stamps[b] - stamps[a] for a, b in itertools.pairwise(steps[1:])
                ]  # first interval: warm-up
                rec(steps_logged=len(stamps), s_per_step=round(statistics.median(gaps), 3))
    returncode = process.wait()
    rec(train_total_s=round(time.perf_counter() - started, 1), returncode=returncode)
    if returncode != 0:
        raise SystemExit(f"accelerate launch -m diffusion_train.train exited with {returncode}")


# ----------------------------------------------------------------------------------------------- summaries


def _summary_env(m: dict[str, Any]) -> str:
    gpu = ", ".join(m.get("gpus", [])) or ("CUDA visible" if m.get("cuda_available") else "no CUDA")
    gsplat = m.get("packages", {}).get("gsplat")
    return f"torch {m.get('torch')} (CUDA {m.get('torch_cuda')}), {gpu}, gsplat {gsplat}"


def _summary_kernels(m: dict[str, Any]) -> str:
    return f"loaded={m.get('loaded')} in {m.get('load_s')} s; nvcc {m.get('nvcc') or 'not found'}"


def _summary_parity(m: dict[str, Any]) -> str:
    text = str(m.get("pytest_summary", ""))
    errors = m.get("errors", {})
    if errors:
        forward = max(max(e["forward_max_abs (tol 1e-3)"].values()) for e in errors.values())
        gradient = max(max(e["gradient_max_rel (tol 2e-2)"].values()) for e in errors.values())
        text += f"; max forward error {forward:.2e}, max gradient error {gradient:.2e} (relative)"
    return text


def _summary_repair(m: dict[str, Any]) -> str:
    runs = [
        f"{k}: {r['s_per_clip']} s/clip, {r['frames_per_s']} frames/s, {r['peak_allocated_gib']} GiB"
        for k, r in m.get("runs", {}).items()
    ]
    checks = [f"non-SDPA attention: {len(m['non_sdpa_layers'])}"] if "non_sdpa_layers" in m else []
    if "loop_host_syncs" in m:
        checks.append(f"DDIM-loop syncs: {m['loop_host_syncs']}")
    return "; ".join(runs + checks)


def _summary_repair_compile(m: dict[str, Any]) -> str:
    run = m.get("run")
    if not run:
        return f"built in {m.get('build_s')} s, not timed"
    return (f"first call (compiles) {run['warmup_s']} s; {run['s_per_clip']} s/clip, {run['frames_per_s']} frames/s, "
            f"{run['peak_allocated_gib']} GiB")


def _summary_2dgs(m: dict[str, Any]) -> str:
    timing = (
        f"{m.get('steps')} steps in {m.get('train_s')} s ({m.get('ms_per_step_wall')} ms/step wall, "
        f"{m.get('ms_per_step_nerfstudio')} ms nerfstudio)"
    )
    parts = [timing, f"peak {m.get('peak_allocated_gib')} GiB"]
    if "psnr" in m:
        parts.append(f"PSNR {m['psnr']:.2f}, SSIM {m.get('ssim', float('nan')):.3f}")
    return "; ".join(parts)


def _summary_full_model(m: dict[str, Any]) -> str:
    if m.get("reused"):
        return f"reused {m.get('folder')}"
    return f"{m.get('params')} params, saved {m.get('size_gib')} GiB in {m.get('save_s')} s"


def _summary_fusion(m: dict[str, Any]) -> str:
    rounds = m.get("rounds", [])
    per_round = ", ".join(
        f"step {r['step']}: {r['seconds']} s, {r['delta_mib']:+.0f} MiB, model on {r['model_device_after']}"
        for r in rounds
    )
    peak = m.get("peak_allocated_mib")
    return f"{len(rounds)} rounds ({per_round}); offloaded={m.get('offloaded')}; peak {peak} MiB"


def _summary_train(m: dict[str, Any]) -> str:
    total = m.get("train_total_s")
    return f"{m.get('s_per_step')} s/step over {m.get('steps_logged')} logged steps; total {total} s"


# ----------------------------------------------------------------------------------------------- registry

PART_FUNCTIONS: dict[str, Callable[[Path, Recorder], None]] = {
    "env": part_env,
    "gsplat-kernels": part_gsplat_kernels,
    "parity": part_parity,
    "repair": part_repair,
    "2dgs": part_2dgs,
    "full-model": part_full_model,
    "fusion": part_fusion,
    "train": part_train,
    "repair-compile": part_repair_compile,
}
PART_NAMES = tuple(PART_FUNCTIONS)


def default_parts(out: Path) -> list[Part]:
    """The parts with their limits (s) and the commands they stand for."""

    def argv(name: str) -> list[str]:
        return [sys.executable, str(SCRIPT), "--run-part", name, "--out", str(out)]

    scene = f"{out}/work/{SCENE}"
    model = f"{out}/work/{MODEL}"
    return [
        Part(
            "env",
            "versions and device",
            30,
            argv("env"),
            "python -c 'import torch; ...'",
            needs_cuda=False,
            summarize=_summary_env,
        ),
        Part(
            "gsplat-kernels",
            "gsplat CUDA extension (JIT build on first use)",
            150,
            argv("gsplat-kernels"),
            "python -c 'from gsplat.cuda._backend import _C'",
            summarize=_summary_kernels,
        ),
        Part(
            "parity",
            "gsplat parity tests",
            60,
            argv("parity"),
            "python -m pytest -m gpu tests/test_rasterize_gsplat_parity.py -q -rs",
            summarize=_summary_parity,
        ),
        Part(
            "repair",
            "full-size video model, one 16-frame clip",
            120,
            argv("repair"),
            f"GenFusionVideoPipeline.from_config_name('full', width={WIDTH}, height={HEIGHT})"
            f".to(device='cuda', dtype=fp16|bf16)(clip, {DDIM_STEPS} DDIM steps, guidance_scale={GUIDANCE}); "
            "float32 weights after pipe.enable_autocast(torch.bfloat16); then fp16 at 960x512",
            summarize=_summary_repair,
        ),
        Part(
            "2dgs",
            "ns-train genfusion-2dgs (authors' 7000-step sparse-view recipe) + ns-eval",
            170,
            argv("2dgs"),
            f"genfusion-scene --out {scene} {' '.join(SCENE_ARGS)}; ns-train genfusion-2dgs --data {scene} "
            "--machine.device-type cuda --vis tensorboard; ns-eval --load-config <run>/config.yml "
            "(in-process: genfusion_ns.runner)",
            summarize=_summary_2dgs,
        ),
        Part(
            "full-model",
            "save the full-size random model (fp16)",
            90,
            argv("full-model"),
            f"GenFusionVideoPipeline.from_config_name('full', width={WIDTH}, height={HEIGHT})"
            f".save_pretrained({model})",
            summarize=_summary_full_model,
        ),
        Part(
            "fusion",
            "ns-train genfusion, two repair rounds with the full-size model",
            150,
            argv("fusion"),
            f"ns-train genfusion --data {scene} --pipeline.video-model {model} "
            f"--max-num-iterations {FUSION_STEPS} "
            f"--pipeline.fusion-start {FUSION_START} --pipeline.fusion-every {FUSION_EVERY} "
            "--machine.device-type cuda --vis tensorboard (in-process: genfusion_ns.runner)",
            summarize=_summary_fusion,
        ),
        Part(
            "train",
            f"{TRAIN_STEPS} steps of the video-model trainer, full size",
            150,
            argv("train"),
            f"genfusion-make-data --scenes <16-view scene> --output {out}/work/train-data --max-steps 20 "
            f"--clip-length {FRAMES} --device cuda; "
            "accelerate launch --num_processes 1 --mixed_precision bf16 -m diffusion_train.train "
            f"--init {model} --max-steps {TRAIN_STEPS} --gradient-accumulation-steps 1 "
            "--mixed-precision bf16 --gradient-checkpointing ...",
            summarize=_summary_train,
        ),
        Part(
            "repair-compile",
            "the repair part's fp16 512x320 clip with the UNet compiled",
            240,
            argv("repair-compile"),
            f"pipe = GenFusionVideoPipeline.from_config_name('full', width={WIDTH}, height={HEIGHT})"
            ".to(device='cuda', dtype=torch.float16); pipe.enable_torch_compile(); "
            f"pipe(clip, {DDIM_STEPS} DDIM steps, guidance_scale={GUIDANCE})",
            summarize=_summary_repair_compile,
        ),
    ]


# ----------------------------------------------------------------------------------------------- report


def _status_style(status: str) -> str:
    return "green" if status == "ok" else "yellow" if status.startswith("skipped") else "red"


def print_table(results: Sequence[PartResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GPU check")
    for column in ("part", "status", "time s (limit)", "peak GPU MiB", "result"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.name,
            f"[{_status_style(r.status)}]{r.status}",
            f"{r.wall_s:.0f} ({r.limit_s:.0f})",
            f"{r.peak_gpu_mib:.0f}" if r.peak_gpu_mib is not None else "-",
            r.summary if r.status == "ok" else (r.error or r.summary or "-"),
        )
    Console(width=max(140, shutil.get_terminal_size().columns)).print(table)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(out: Path, results: Sequence[PartResult], header: dict[str, Any]) -> None:
    """``report.json`` (everything) and ``report.md`` (the table, then each part's commands and figures)."""
    data = {**header, "parts": [asdict(r) | {"passed": r.passed} for r in results]}
    (out / "report.json").write_text(json.dumps(data, indent=2, default=str))
    lines = [
        "# GPU check",
        "",
        f"- date: {header['date']}",
        f"- machine: {header['machine']}",
        f"- command: `{header['command']}`",
        f"- budget: {header['budget_s']:.0f} s; wall time {header.get('wall_s', 0):.0f} s",
        "",
        "| part | status | time s (limit) | peak GPU MiB (nvidia-smi) | result |",
        "|---|---|---:|---:|---|",
    ]
    for r in results:
        peak = f"{r.peak_gpu_mib:.0f}" if r.peak_gpu_mib is not None else "-"
        shown = r.summary if r.status == "ok" else (r.error or r.summary or "-")
        lines.append(
            f"| {r.name} | {r.status} | {r.wall_s:.0f} ({r.limit_s:.0f}) | {peak} | {_cell(shown)} |"
        )
    for r in results:
        lines += ["", f"## {r.name}: {r.title}", "", f"- status: {r.status}", f"- commands: `{r.commands}`"]
        if r.log:
            lines.append(f"- log: `{r.log}`")
        if r.metrics:
            lines += ["", "```json", json.dumps(r.metrics, indent=2, default=str), "```"]
        if r.status not in ("ok",) and not r.status.startswith("skipped") and r.log:
            lines += ["", "Last lines of the log:", "", "```", _tail(out / r.log, 25), "```"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def describe_machine() -> str:
    parts = [platform.platform(), f"{os.cpu_count()} CPUs", f"python {platform.python_version()}"]
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "-L"], check=False, capture_output=True, text=True)
        parts.append(query.stdout.strip().replace("\n", "; ") or "nvidia-smi: no GPU listed")
    return "; ".join(parts)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def prepare_out(out: Path) -> None:
    """``--out`` is new, empty, or an earlier gpu_check report (its work/ is reused); never anything else."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SystemExit(
            f"--out {out} is not empty and was not written by gpu_check.py; choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by benchmarks/gpu_check.py\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="report folder (new, empty or an earlier report)"
    )
    parser.add_argument("--parts", nargs="+", choices=PART_NAMES, default=None, help="run only these parts")
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S, help="overall time budget, seconds"
    )
    parser.add_argument("--run-part", choices=PART_NAMES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()

    if args.run_part:  # inside a part's subprocess
        PART_FUNCTIONS[args.run_part](out, Recorder())
        return 0

    prepare_out(out)
    started = time.monotonic()
    cuda = cuda_available()
    if not cuda:
        print(
            "No CUDA device is visible (torch.cuda.is_available() is False): every GPU part is recorded as "
            "'skipped: no CUDA'. Run this command on a GPU machine to measure.",
            flush=True,
        )
    parts = [p for p in default_parts(out) if args.parts is None or p.name in args.parts]
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": describe_machine(),
        "command": " ".join(["python benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "budget_s": args.budget_s,
        "cuda": cuda,
    }
    done: list[PartResult] = []

    def report(result: PartResult) -> None:
        done.append(result)
        shown = result.summary if result.status == "ok" else (result.error or result.summary)
        print(
            f"[{len(done)}/{len(parts)}] {result.name}: {result.status} ({result.wall_s:.0f} s)"
            + (f" - {shown}" if shown else ""),
            flush=True,
        )
        header["wall_s"] = time.monotonic() - started
        write_report(out, done, header)

    results = run_parts(parts, out, args.budget_s, cuda, on_result=report)
    header["wall_s"] = time.monotonic() - started
    write_report(out, results, header)
    print_table(results)
    print(f"Report: {out / 'report.md'} and {out / 'report.json'} ({header['wall_s']:.0f} s)")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
