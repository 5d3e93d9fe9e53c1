"""Exposure compensation on and off: one nerfstudio method on datasets (e.g. the protocol folders a
``genfusion-bench`` run wrote), scored on the held-out views as ``ns-eval`` does.

Example (the table in docs/benchmarks.md, "Closing the domain gap")::

    python benchmarks/exposure_compensation.py --out-dir /tmp/expo --modes on off \
        /tmp/rb/lund_f/datasets/lund160/sparse-3 /tmp/rb/lund_f/datasets/lund160/sparse-6
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path, help="nerfstudio dataset folders")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--method", default="genfusion-2dgs-lite")
    parser.add_argument("--modes", nargs="+", choices=("on", "off"), default=("on", "off"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from genfusion_ns.runner import evaluate_run, train_in_process, trainer_config

    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, float]] = {}
    for data in args.datasets:
        for mode in args.modes:
            start = time.perf_counter()
            config = trainer_config(args.method, data, args.out_dir / data.name, f"exposure-{mode}", "run",
                                    device="cpu")
            config.pipeline.model.exposure_compensation = mode == "on"
            evaluation = evaluate_run(train_in_process(config))
            key = f"{data.name} exposure={mode}"
            results[key] = {**evaluation.metrics, "seconds": time.perf_counter() - start}
            print(f"| {key} | {evaluation.metrics['psnr']:.2f} | {evaluation.metrics['ssim']:.3f} |", flush=True)
    (args.out_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
