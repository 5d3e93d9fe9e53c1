"""Benchmark of the 2DGS rasterizer backends: forward and forward+backward time, peak memory.

Scenes (one camera, 60 degree field of view, see ``make_scene``): ``surface`` puts the surfels on a wall, a floor
and three spheres, oriented along the surfaces, like a trained reconstruction; ``volume`` fills a box with randomly
oriented, semi-transparent surfels sized by their spacing, like a random initialisation (many layers per pixel:
a stress test). Peak memory is the CUDA allocator peak above the scene's own tensors for CUDA runs, and on CPU the growth of the
process's peak RSS over the RSS before the first render; each CPU case runs in a fresh process (``--isolate``,
the default) so that figure is per case.

    python benchmarks/rasterizer.py                      # default grid, all backends available here
    python benchmarks/rasterizer.py --sizes 96 --counts 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from genfusion_ns.rasterize import rasterize_surfels
from genfusion_ns.rasterize.torch_backend import rasterize_torch


@dataclass
class Result:
    backend: str
    size: int
    count: int
    overlaps: int
    forward_s: float
    forward_backward_s: float
    forward_backward_cpu_s: float  # process CPU time (all threads): the wall time an idle machine would need
    peak_mb: float


def _quat_z_to(normals: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions rotating +z onto each unit normal."""
    z = torch.tensor([0.0, 0.0, 1.0]).expand_as(normals)
    q = torch.cat([1.0 + (normals * z).sum(-1, keepdim=True), torch.linalg.cross(z, normals, dim=-1)], -1)
    flipped = q[:, 0] < 1e-6
    q[flipped] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    return q / q.norm(dim=-1, keepdim=True)


def make_scene(n: int, size: int, device: torch.device, kind: str = "surface", seed: int = 0) -> dict:
    """``volume``: random surfels filling a box (a random initialisation; deep, low-opacity layers).
    ``surface``: surfels lying on a back wall, a floor and three spheres, oriented along the surface, as after
    training (most pixels are covered by a few opaque layers)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "volume":
        means = (torch.rand(n, 3, generator=g) * 2 - 1)
        means[:, 2] += 3.0  # camera at the origin looking down +z
        spacing = (8.0 / max(n, 1)) ** (1 / 3)
        quats = torch.randn(n, 4, generator=g)
        scales = torch.full((n, 3), spacing) * (0.5 + torch.rand(n, 3, generator=g))
        opac = 0.1 + 0.8 * torch.rand(n, generator=g)
    elif kind == "surface":
        n_wall, n_floor = n // 3, n // 6
        n_sph = n - n_wall - n_floor
        wall = torch.stack([torch.rand(n_wall, generator=g) * 6 - 3, torch.rand(n_wall, generator=g) * 5 - 3,
                            torch.full((n_wall,), 5.0)], -1)
        floor = torch.stack([torch.rand(n_floor, generator=g) * 6 - 3, torch.full((n_floor,), 1.2),
                             torch.rand(n_floor, generator=g) * 4 + 1], -1)
        centres = torch.tensor([[-0.8, 0.5, 3.0], [0.7, 0.3, 3.5], [0.0, -0.4, 2.5]])
        radii = torch.tensor([0.6, 0.8, 0.5])
        which = torch.randint(0, 3, (n_sph,), generator=g)
        dirs = torch.nn.functional.normalize(torch.randn(n_sph, 3, generator=g), dim=-1)
        sph = centres[which] + radii[which, None] * dirs
        means = torch.cat([wall, floor, sph])
        normals = torch.cat([torch.tensor([0.0, 0.0, -1.0]).expand(n_wall, 3),
                             torch.tensor([0.0, -1.0, 0.0]).expand(n_floor, 3), dirs])
        area = torch.cat([torch.full((n_wall,), 30.0 / max(n_wall, 1)), torch.full((n_floor,), 24.0 / max(n_floor, 1)),
                          (4 * math.pi * radii**2)[which] * 3 / max(n_sph, 1) / 3])
        spacing = area.sqrt()
        quats = _quat_z_to(normals)
        scales = spacing[:, None] * (0.6 + 0.6 * torch.rand(n, 3, generator=g))
        opac = 0.5 + 0.5 * torch.rand(n, generator=g)
    else:
        raise ValueError(f"unknown scene kind {kind!r}; use 'surface' or 'volume'.")
    f = size / (2 * math.tan(math.radians(30)))  # 60 degree field of view
    scene = {
        "means": means, "quats": quats, "scales": scales, "opacities": opac, "colors": torch.rand(n, 3, generator=g),
        "viewmats": torch.eye(4)[None], "Ks": torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]]]),
    }
    return {k: v.to(device) for k, v in scene.items()} | {"width": size, "height": size}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(
    backend: str, size: int, count: int, device: torch.device, repeats: int, tile_size: int = 4,
    chunk_size: int = 16, kind: str = "surface", cache_mb: int = 256,
) -> Result:
    scene = make_scene(count, size, device, kind)
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}

    def render():
        if backend == "torch":
            return rasterize_torch(**{**scene, **params}, tile_size=tile_size, chunk_size=chunk_size,
                                   backward_cache_bytes=cache_mb * 2**20)
        return rasterize_surfels(**{**scene, **params}, backend=backend)

    def forward():
        with torch.no_grad():
            return render()

    def forward_backward():
        out = render()
        loss = out.rgb.sum() + out.depth_expected.sum() + out.normals.sum() + out.distortion.sum()
        loss.backward()
        return out

    # Initialise the libraries (thread pools, allocator arenas, CUDA context) on a tiny scene first, so the memory
    # figure is the rasterizer's own.
    tiny = make_scene(16, 16, device, kind)
    rasterize_surfels(**tiny, backend=backend).rgb.sum()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _current_rss_mb()  # meaningful when each case runs in a fresh process (--isolate)
    out = forward_backward()  # warm-up (and CUDA kernel load)
    overlaps = out.n_overlaps
    times_f, times_fb, cpu_fb = [], [], []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        forward()
        _sync(device)
        times_f.append(time.perf_counter() - t0)
        for p in params.values():
            p.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        forward_backward()
        _sync(device)
        times_fb.append(time.perf_counter() - t0)
        cpu_fb.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = max(0.0, _peak_rss_mb() - base)
    return Result(backend, size, count, overlaps, statistics.median(times_f), statistics.median(times_fb),
                  statistics.median(cpu_fb), peak)


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({model}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    ap.add_argument("--counts", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--backends", nargs="+", default=None, help="default: torch and cpu on CPU, torch and gsplat on CUDA")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenes", nargs="+", default=["surface", "volume"], choices=["surface", "volume"])
    ap.add_argument("--tile-size", type=int, default=4, help="torch backend binning tile")
    ap.add_argument("--chunk-size", type=int, default=16, help="torch backend list entries per compositing step")
    ap.add_argument("--backward-cache-mb", type=int, default=256, help="torch backend forward work kept for backward")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--device", default=None, help="default: cuda if available else cpu")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for docs)")
    ap.add_argument("--no-isolate", dest="isolate", action="store_false", help="run all cases in this process")
    ap.add_argument("--json-case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = ap.parse_args()
    if args.json_case:
        backend, kind, size, count = args.json_case.split(",")
        if args.threads:
            torch.set_num_threads(args.threads)
        r = run_case(backend, int(size), int(count), torch.device(args.device), args.repeats, args.tile_size,
                     args.chunk_size, kind, args.backward_cache_mb)
        print("RESULT " + json.dumps(dataclasses.asdict(r)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    backends = args.backends or (["torch", "gsplat"] if device.type == "cuda" else ["torch", "cpu"])
    console = Console(width=200)
    console.print(f"[bold]machine[/]: {machine_description()}; load average {os.getloadavg()}")
    table = Table(title=f"2DGS rasterizer on {device} (median of {args.repeats})")
    columns = ("backend", "scene", "image", "surfels", "surfel-tile overlaps", "forward (s)", "fwd+bwd (s)",
               "fwd+bwd CPU (s)", "peak mem (MB)")
    for col in columns:
        table.add_column(col, justify="right")
    rows = []
    for backend, kind, size, count in itertools.product(backends, args.scenes, args.sizes, args.counts):
        if args.isolate and device.type == "cpu":
            cmd = [sys.executable, __file__, "--json-case", f"{backend},{kind},{size},{count}", "--device", "cpu",
                   "--repeats", str(args.repeats), "--tile-size", str(args.tile_size),
                   "--chunk-size", str(args.chunk_size), "--backward-cache-mb", str(args.backward_cache_mb)] + (["--threads", str(args.threads)] if args.threads else [])
            lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
            r = Result(**json.loads(next(ln for ln in lines if ln.startswith("RESULT "))[7:]))
        else:
            r = run_case(backend, size, count, device, args.repeats, args.tile_size, args.chunk_size, kind,
                         args.backward_cache_mb)
        rows.append((r.backend, kind, f"{size}x{size}", str(count), str(r.overlaps), f"{r.forward_s:.3f}",
                     f"{r.forward_backward_s:.3f}", f"{r.forward_backward_cpu_s:.3f}", f"{r.peak_mb:.0f}"))
        table.add_row(*rows[-1])
    console.print(table)
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
