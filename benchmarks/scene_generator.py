"""Time `genfusion-scene` (24 views at 96×96 by default) in a single thread and print a table.

Usage: python benchmarks/scene_generator.py [--views 24] [--resolution 96] [--repeats 3]
Target: ≤ 2 s per scene on one CPU core.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console
from rich.table import Table

from genfusion_ns.scenes import generate_scene


@dataclass
class Args:
    views: int = 24
    resolution: int = 96
    repeats: int = 3


def main(args: Args) -> None:
    table = Table(title=f"genfusion-scene, {args.views} views at {args.resolution}², 1 thread")
    for column in ("kind", "path", "best wall s", "best CPU s"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in (("room", "orbit"), ("room", "arc"), ("object", "orbit")):
            walls, cpus = [], []
            for r in range(args.repeats):
                wall, cpu = time.perf_counter(), time.process_time()
                generate_scene(Path(tmp) / f"{kind}-{path}-{r}", seed=r, views=args.views, train_views=3,
                               resolution=args.resolution, kind=kind, path=path)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            table.add_row(kind, path, f"{min(walls):.2f}", f"{min(cpus):.2f}")
    Console().print(table)


if __name__ == "__main__":
    main(tyro.cli(Args))
