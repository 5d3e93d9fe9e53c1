"""The bench report: ``report.md`` and ``results.json`` (every cell, and means per protocol and method) plus one
comparison picture per scene and protocol, all in the report folder."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from genfusion_ns.bench.cells import CellResult
from genfusion_ns.bench.pictures import comparison_picture, eval_frame_names

METRIC_COLUMNS = (
    "psnr",
    "ssim",
    "lpips",
    "train_seconds",
    "repair_seconds",
    "peak_memory_mib",
    "num_surfels",
)
HEADERS = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "train_seconds": "train s",
    "repair_seconds": "repair s",
    "peak_memory_mib": "peak MiB",
    "num_surfels": "surfels",
}
DIGITS = {
    "psnr": 2,
    "ssim": 4,
    "lpips": 4,
    "train_seconds": 1,
    "repair_seconds": 1,
    "peak_memory_mib": 0,
    "num_surfels": 0,
}


def format_value(column: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{DIGITS[column]}f}"


def protocol_method_means(results: Sequence[CellResult]) -> list[dict[str, object]]:
    """Mean of every metric over the scenes, per protocol and method (finished cells only; a metric missing in any
    cell of the group -- e.g. LPIPS offline -- has no mean)."""
    groups: dict[tuple, list[CellResult]] = {}
    for result in results:
        if result.status == "done":
            groups.setdefault((result.protocol, result.method), []).append(result)
    means = []
    for (protocol, method), cells in groups.items():
        row: dict[str, object] = {"protocol": protocol, "method": method, "scenes": len(cells)}
        for column in METRIC_COLUMNS:
            values = [getattr(c, column) for c in cells]
            row[column] = None if any(v is None for v in values) else sum(values) / len(values)
        means.append(row)
    return means


def describe_machine(device: str) -> str:
    """CPU model and core count, OS, torch version, and the GPU when the bench ran on one."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (
        f"{cpu} x{os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )
    if device == "cuda" and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text + f"; ran on {device}"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _pictures(results: Sequence[CellResult], root: Path, max_views: int) -> dict[tuple, Path]:
    pictures: dict[tuple, Path] = {}
    for scene, protocol in dict.fromkeys((r.scene, r.protocol) for r in results):
        cells = [r for r in results if (r.scene, r.protocol) == (scene, protocol) and r.status == "done"]
        dirs = {r.method: Path(r.render_folder) for r in cells if r.render_folder}
        labels = {r.method: f"PSNR {format_value('psnr', r.psnr)}" for r in cells}
        configs = [Path(r.config_path) for r in cells if r.config_path]  # one dataset per scene and protocol
        path = comparison_picture(
            dirs,
            root / "pictures" / f"{scene}__{protocol}.png",
            title=f"{scene}, {protocol}: held-out views",
            max_views=max_views,
            labels=labels,
            frame_names=eval_frame_names(configs[0]) if configs else None,
        )
        if path is not None:
            pictures[(scene, protocol)] = path
    return pictures


def write_report(
    root: Path, results: Sequence[CellResult], settings: dict[str, object], command: str, render_views: int
) -> Path:
    """Write report.md, results.json and the pictures; returns the markdown path."""
    means = protocol_method_means(results)
    pictures = _pictures(results, root, render_views)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe_machine(str(settings.get("device")))
    lines = [
        "# genfusion-bench report",
        "",
        f"- date: {now}",
        f"- machine: {machine}",
        f"- command: `{command}`",
        f"- settings: {json.dumps(settings)}",
        "",
    ]
    if settings.get("video_model") == "random-tiny":
        lines += [
            "**The video model is `random-tiny`: an untrained, randomly initialised network. Its repairs are "
            "noise; no gain over the diffusion-free baseline is expected.**",
            "",
        ]
    header = (
        ["scene", "protocol", "method", "train/test views"]
        + [HEADERS[c] for c in METRIC_COLUMNS]
        + ["points"]
    )
    rows = []
    for r in results:
        views = f"{r.train_views}/{r.test_views}" if r.train_views is not None else "n/a"
        values = (
            [format_value(c, getattr(r, c)) for c in METRIC_COLUMNS]
            if r.status == "done"
            else [f"failed: {r.error}"] + [""] * (len(METRIC_COLUMNS) - 1)
        )
        rows.append([r.scene, r.protocol, r.method, views, *values, r.points_note])
    lines += ["## Cells", ""] + _markdown_table(header, rows) + [""]
    mean_rows = [
        [str(m["protocol"]), str(m["method"]), str(m["scenes"])]
        + [format_value(c, m[c]) for c in METRIC_COLUMNS]
        for m in means
    ]  # type: ignore[arg-type]
    lines += ["## Means over scenes (per protocol and method)", ""]
    lines += _markdown_table(
        ["protocol", "method", "scenes"] + [HEADERS[c] for c in METRIC_COLUMNS], mean_rows
    )
    kinds = sorted({r.peak_memory_kind for r in results if r.status == "done"})
    lines += [
        "",
        "Notes: held-out views scored as `ns-eval` does (`get_average_eval_image_metrics`). LPIPS 'n/a': "
        "the method could not compute it here (e.g. its AlexNet weights are not available offline); no "
        "placeholder value is ever reported. 'train s' includes the repair "
        f"rounds ('repair s'). Peak memory: {', '.join(kinds) or 'n/a'}.",
        "",
    ]
    if pictures:
        lines += ["## Pictures (ground truth, then each method's render of held-out views)", ""]
        lines += [f"![{s} {p}]({path.relative_to(root)})" for (s, p), path in pictures.items()] + [""]
    markdown = root / "report.md"
    markdown.write_text("\n".join(lines))
    (root / "results.json").write_text(
        json.dumps(
            {
                "date": now,
                "machine": machine,
                "command": command,
                "settings": settings,
                "cells": [asdict(r) for r in results],
                "means": means,
                "pictures": {f"{s}__{p}": str(path.relative_to(root)) for (s, p), path in pictures.items()},
            },
            indent=2,
        )
    )
    return markdown
