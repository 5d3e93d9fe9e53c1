"""``genfusion-demo`` end to end at a tiny budget: both default methods trained in parallel processes, a report."""

import json

import pytest
from PIL import Image

from genfusion_ns.demo import DemoConfig, DemoError, run_demo


def test_demo_trains_both_methods_in_parallel_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    config = DemoConfig(out=out, max_steps=20, video_model="random-tiny", resolution=48, device="cpu")
    results = run_demo(config)

    assert set(results) == {"genfusion-2dgs-lite", "genfusion-lite"}
    for metrics in results.values():
        assert 5.0 < metrics["psnr"] < 60.0 and metrics["train_seconds"] > 0
    assert json.loads((out / "metrics.json").read_text()).keys() == results.keys()
    assert "genfusion-lite" in (out / "metrics.md").read_text()
    assert (out / "comparison.png").is_file()
    clip = Image.open(out / "repaired_clip.png")
    assert clip.height > 0 and clip.width >= clip.height  # renders above repairs, frames side by side
    for method in results:  # the worker processes' output went to the logs, with nerfstudio's step table in it
        assert (out / "logs" / f"{method}.log").read_text().strip()


def test_demo_refuses_to_overwrite_user_files(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DemoError, match="--overwrite"):
        run_demo(DemoConfig(out=tmp_path, max_steps=5, video_model="random-tiny"))
    assert (tmp_path / "mine.txt").read_text() == "keep me"
