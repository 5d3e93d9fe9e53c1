"""``genfusion-bench``: the paper's evaluation protocols over scenes and methods, with a resumable report folder."""

from genfusion_ns.bench.config import BenchConfig, BenchError

__all__ = ["BenchConfig", "BenchError"]
