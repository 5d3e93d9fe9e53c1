"""``genfusion-demo`` end to end at a tiny budget: both default methods trained in parallel processes, a report."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genfusion_ns.bench.pictures import eval_frame_names, method_title
from genfusion_ns.demo import (
    NOT_AVAILABLE_NOTE,
    REPORTED_COLUMNS,
    DemoConfig,
    DemoError,
    _metric_records,
    next_commands,
    run_demo,
)


def _md_rows(text: str) -> dict[str, dict[str, str]]:
    """metrics.md's table as ``{method: {column: cell}}``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = rows[0], rows[2:]
    return {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in body}


def test_demo_trains_both_methods_in_parallel_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    config = DemoConfig(out=out, max_steps=20, video_model="random-tiny", resolution=48, device="cpu")
    results = run_demo(config)

    assert set(results) == {"genfusion-2dgs-lite", "genfusion-lite"}
    for metrics in results.values():
        assert 5.0 < metrics["psnr"] < 60.0 and metrics["train_seconds"] > 0
    # metrics.md and metrics.json agree: the same columns, and "n/a" exactly where the JSON has null.
    records = json.loads((out / "metrics.json").read_text())
    markdown = (out / "metrics.md").read_text()
    table = _md_rows(markdown)
    assert records.keys() == results.keys() == table.keys()
    for method, record in records.items():
        for column in REPORTED_COLUMNS:
            assert column in record
            assert (table[method][column] == "n/a") == (record[column] is None)
            if record[column] is not None:
                assert float(table[method][column]) == pytest.approx(record[column], abs=1e-4)
    missing = any(r[c] is None for r in records.values() for c in REPORTED_COLUMNS)
    assert (NOT_AVAILABLE_NOTE in markdown) == missing
    assert (out / "comparison.png").is_file()
    clip = Image.open(out / "repaired_clip.png")
    assert clip.height > 0 and clip.width >= clip.height  # renders above repairs, frames side by side
    for method in results:  # the worker processes' output went to the logs, with nerfstudio's step table
        assert (out / "logs" / f"{method}.log").read_text().strip()

    # The closing commands are pasteable lines that point at the runs' real config.yml.
    printed = capsys.readouterr().out.splitlines()
    for method in results:
        config_path = out / "runs" / method / method / "demo" / "config.yml"
        assert config_path.is_file()
        for command in ("ns-viewer", "ns-eval", "ns-export gaussian-splat", "ns-render interpolate"):
            lines = [line for line in printed if line.startswith(command + " ") and str(config_path) in line]
            assert len(lines) == 1, (command, method)
            words = shlex.split(lines[0])
            assert Path(words[words.index("--load-config") + 1]) == config_path

    # The comparison's rows are named after the dataset frames that eval_img_XXXX really shows.
    names = eval_frame_names(out / "runs" / "genfusion-lite" / "genfusion-lite" / "demo" / "config.yml")
    assert names is not None and len(names) == 21  # 24 views, 3 for training
    for index in (0, 3):
        evaluated = np.asarray(Image.open(out / "renders" / "genfusion-lite" / f"eval_img_{index:04d}.png"))
        ground_truth = np.asarray(Image.open(out / "scene" / "images" / names[index]).convert("RGB"))
        np.testing.assert_allclose(evaluated[:, : ground_truth.shape[1]], ground_truth, atol=1)


def test_next_commands_cover_every_run_and_tool(tmp_path):
    methods = ("genfusion-2dgs-lite", "genfusion-lite")
    configs = {m: tmp_path / "runs" / m / m / "demo" / "config.yml" for m in methods}
    commands = next_commands(configs, tmp_path)
    assert len(commands) == 8
    for method, path in configs.items():
        load = f"--load-config {path}"
        assert f"ns-viewer {load}" in commands
        assert f"ns-eval {load} --output-path {tmp_path / 'eval' / (method + '.json')}" in commands
        assert f"ns-export gaussian-splat {load} --output-dir {tmp_path / 'export' / method}" in commands
        assert f"ns-render interpolate {load} --output-path {tmp_path / 'videos' / method}.mp4" in commands
    spaced = next_commands({"m": Path("my runs/config.yml")}, Path("out dir"))
    assert shlex.split(spaced[0]) == ["ns-viewer", "--load-config", "my runs/config.yml"]


def test_metric_records_carry_every_column_with_null_for_missing():
    records = _metric_records({"a": {"psnr": 20.0, "ssim": 0.5, "train_seconds": 3.0, "fps": 9.0}})
    assert records == {"a": {"psnr": 20.0, "ssim": 0.5, "lpips": None, "train_seconds": 3.0, "fps": 9.0}}
    assert json.loads(json.dumps(records))["a"]["lpips"] is None


def test_method_titles_name_the_role():
    assert method_title("genfusion-2dgs-lite") == "baseline\ngenfusion-2dgs-lite"
    assert method_title("genfusion-lite") == "GenFusion\ngenfusion-lite"
    assert method_title("splatfacto") == "splatfacto"


def test_demo_refuses_to_overwrite_user_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DemoError, match="--overwrite"):
        run_demo(DemoConfig(out=tmp_path, max_steps=5, video_model="random-tiny"))
    assert (tmp_path / "mine.txt").read_text() == "keep me"
