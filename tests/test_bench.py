"""genfusion-bench: option checks, the fusion schedule under --max-steps, and a tiny end-to-end CPU run that writes
the report and resumes without retraining."""

from __future__ import annotations

import json

import pytest

from genfusion_ns.bench import BenchConfig, BenchError
from genfusion_ns.bench.protocols import parse_protocol


def test_protocol_names():
    assert parse_protocol("sparse-6").kind == "sparse" and parse_protocol("sparse-6").count == 6
    assert parse_protocol("masked-4").fusion_trajectory == "crop"
    assert parse_protocol("dense").count is None
    for bad in ("sparse", "sparse-0", "masked-x", "Dense"):
        with pytest.raises(BenchError, match="unknown protocol"):
            parse_protocol(bad)


def test_method_choice_follows_the_device():
    assert BenchConfig(device="cpu").resolved_methods() == ("genfusion-lite", "genfusion-2dgs-lite")
    with pytest.raises(BenchError, match="need CUDA"):
        BenchConfig(device="cpu", methods=("splatfacto", "genfusion-2dgs-lite")).resolved_methods()


def test_bad_scenes_fail_clearly(tmp_path):
    from genfusion_ns.bench.scenes import resolve_scenes

    with pytest.raises(BenchError, match="not a nerfstudio dataset folder"):
        resolve_scenes(BenchConfig(scenes=(str(tmp_path / "nope"),)), tmp_path / "scenes")
    tiny = BenchConfig(scene_views=6, scene_resolution=16)
    assert [s.name for s in resolve_scenes(tiny, tmp_path / "scenes")] == ["room-s0"]
    with pytest.raises(BenchError, match="other settings"):  # a generated scene is never regenerated over
        resolve_scenes(BenchConfig(scene_views=6, scene_resolution=20), tmp_path / "scenes")
    photo = BenchConfig(scene_views=6, scene_resolution=16, scene_kind="street", scene_textures="photo")
    assert [s.name for s in resolve_scenes(photo, tmp_path / "scenes")] == ["street-photo-s0"]
    # A scene.json written before texture styles existed still counts as the same procedural scene.
    record = tmp_path / "scenes" / "room-s0" / "scene.json"
    settings = json.loads(record.read_text())
    del settings["textures"]
    record.write_text(json.dumps(settings))
    assert [s.name for s in resolve_scenes(tiny, tmp_path / "scenes")] == ["room-s0"]


def test_max_steps_keeps_the_repair_rounds_inside_training(tmp_path):
    from genfusion_ns.fusion.schedule import resolve_schedule
    from genfusion_ns.runner import trainer_config

    config = trainer_config("genfusion-lite", tmp_path, tmp_path, "x", "t", "cpu", max_steps=40,
                            video_model="random-tiny", trajectory="crop")
    pipeline = config.pipeline
    schedule = resolve_schedule(config.max_num_iterations, pipeline.fusion_start_fraction,
                                pipeline.fusion_every_fraction, pipeline.fusion_until_fraction)
    assert (schedule.start, schedule.every, schedule.until) == (10, 10, 40)  # 1/4 steps
    assert schedule.round_steps(config.max_num_iterations) == [10, 20, 30]
    assert pipeline.video_model == "random-tiny" and pipeline.trajectory == "crop"
    baseline = trainer_config("genfusion-2dgs-lite", tmp_path, tmp_path, "x", "t", "cpu", max_steps=40,
                              video_model="random-tiny")
    assert baseline.max_num_iterations == 40 and not hasattr(baseline.pipeline, "video_model")


def test_protocol_datasets_are_written_once_and_reused(tiny_dense_scene, tmp_path):
    from genfusion_ns.bench.protocols import prepare_dataset

    folder = tmp_path / "datasets"
    expected = {"sparse-3": (3, 13), "masked-2": (8, 8), "dense": (14, 2)}
    for name, counts in expected.items():
        dataset = prepare_dataset(parse_protocol(name), tiny_dense_scene, folder, seed=0, depth_tolerance=0.05)
        assert (dataset.train_views, dataset.test_views) == counts and dataset.path == folder / name
    assert "frustum+depth" in prepare_dataset(parse_protocol("dense"), tiny_dense_scene, folder, 0, 0.05).points_note
    assert "patches" in prepare_dataset(parse_protocol("masked-2"), tiny_dense_scene, folder, 0, 0.05).points_note

    # A finished dataset is reused as it is; a half-written one (interrupted run) is written again.
    stamp = (folder / "sparse-3" / "transforms.json").stat().st_mtime_ns
    prepare_dataset(parse_protocol("sparse-3"), tiny_dense_scene, folder, 0, 0.05)
    assert (folder / "sparse-3" / "transforms.json").stat().st_mtime_ns == stamp
    (folder / "sparse-6.partial").mkdir()
    (folder / "sparse-6.partial" / "junk").write_text("interrupted")
    assert prepare_dataset(parse_protocol("sparse-6"), tiny_dense_scene, folder, 0, 0.05).train_views == 6
    assert not (folder / "sparse-6.partial").exists()


@pytest.mark.slow
def test_fusion_options_reach_only_the_fusion_methods_and_misspellings_fail_first(tmp_path):
    import genfusion_ns.bench.cli as cli
    from genfusion_ns.bench.cells import Cell
    from genfusion_ns.bench.scenes import BenchScene
    from genfusion_ns.runner import trainer_config

    config = BenchConfig(output=tmp_path / "report", device="cpu",
                         fusion_options=("pipeline.repair_strength_last=0.25", "pipeline.trajectory=crop"))
    fusion = cli.fusion_trainer_config(config, trainer_config("genfusion-lite", tmp_path, tmp_path, "x", "t", "cpu"))
    assert fusion.pipeline.repair_strength_last == 0.25 and fusion.pipeline.trajectory == "crop"
    baseline = trainer_config("genfusion-2dgs-lite", tmp_path, tmp_path, "x", "t", "cpu")
    assert cli.fusion_trainer_config(config, baseline) is baseline
    scene, cell = BenchScene("room-s0", tmp_path, True), Cell("room-s0", "sparse-3", "genfusion-lite")
    assert cli.cell_settings(config, scene, cell, "cpu")["fusion_options"] == list(config.fusion_options)
    assert "fusion_options" not in cli.cell_settings(BenchConfig(), scene, cell, "cpu")  # older cells still match
    with pytest.raises(BenchError, match="no field"):
        cli.run_bench(BenchConfig(output=tmp_path / "bad", device="cpu", methods=("genfusion-lite",),
                                  fusion_options=("pipeline.repair_strenght=0.2",)), command="pytest")
    assert not (tmp_path / "bad" / "scenes").exists()  # nothing was generated or trained


def test_tiny_bench_writes_report_and_resumes_without_retraining(tmp_path, monkeypatch):
    import genfusion_ns.bench.cli as cli

    config = BenchConfig(output=tmp_path / "report", num_scenes=1, scene_views=10, scene_resolution=24,
                         methods=("genfusion-2dgs-lite", "genfusion-lite"), protocols=("sparse-3",), max_steps=6,
                         video_model="random-tiny", device="cpu", threads=1, render_views=2)
    first = cli.run_bench(config, command="pytest")
    assert [r.status for r in first] == ["done", "done"], [r.error for r in first]
    baseline, fusion = first
    for result in first:
        assert 0 < result.psnr < 60 and 0 < result.ssim <= 1
        assert result.train_views == 3 and result.test_views == 7
        assert result.num_surfels > 0 and result.peak_memory_mib > 0 and result.train_seconds > 0
        assert "frustum+depth" in result.points_note
    assert baseline.repair_seconds is None  # no repair rounds in the baseline
    assert 0 < fusion.repair_seconds <= fusion.train_seconds  # one round at step 3 of 6

    root = tmp_path / "report"
    report = (root / "report.md").read_text()
    assert "| room-s0 | sparse-3 | genfusion-lite | 3/7 |" in report and "random-tiny" in report
    results = json.loads((root / "results.json").read_text())
    assert {m["method"] for m in results["means"]} == {"genfusion-2dgs-lite", "genfusion-lite"}
    lpips = results["cells"][0]["lpips"]
    row = next(line for line in report.splitlines() if "| genfusion-2dgs-lite | 3/7 |" in line)
    assert row.split("|")[7].strip() == ("n/a" if lpips is None else f"{lpips:.4f}")  # never a made-up value
    picture = root / results["pictures"]["room-s0__sparse-3"]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Second invocation: every cell is finished, nothing is trained again.
    calls = []
    real_run_cell = cli.run_cell
    monkeypatch.setattr(cli, "run_cell", lambda *args, **kw: calls.append(args[2]) or real_run_cell(*args, **kw))
    second = cli.run_bench(config, command="pytest")
    assert calls == [] and [r.psnr for r in second] == [r.psnr for r in first]

    # An interrupted run (a cell without its result file, a partial run folder) continues with that cell only.
    (root / "cells" / "room-s0__sparse-3__genfusion-2dgs-lite.json").unlink()
    third = cli.run_bench(config, command="pytest")
    assert [c.method for c in calls] == ["genfusion-2dgs-lite"] and third[0].status == "done"

    # Other settings never reuse (or overwrite) these results.
    with pytest.raises(BenchError, match="other settings"):
        cli.run_bench(BenchConfig(**{**config.__dict__, "max_steps": 7}), command="pytest")


def load_fusion_gain():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fusion_gain.py"
    spec = importlib.util.spec_from_file_location("fusion_gain", path)
    fusion_gain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fusion_gain)
    return fusion_gain


def test_fusion_gain_prepares_the_benchs_protocol_datasets(tmp_path):
    """--protocol masked-K scores against a scene with every view and trains on the bench's masked dataset of it."""
    import argparse
    import json

    fusion_gain = load_fusion_gain()
    args = argparse.Namespace(protocol=parse_protocol("masked-2"), kind="room", train_views=3, out_dir=tmp_path)
    name, scene, dataset = fusion_gain.prepare_scene(args, seed=7)
    assert name == "room-s7-masked-2" and scene != dataset
    source, masked = (json.loads((p / "transforms.json").read_text()) for p in (scene, dataset))
    assert len(masked["train_filenames"]) == len(source["frames"]) // 2  # every 2nd view trains, on its patch
    assert all("mask_path" in f for f in masked["frames"] if f["file_path"] in masked["train_filenames"])
    assert fusion_gain.prepare_scene(args, seed=7) == (name, scene, dataset)  # the second call reuses both

    plain = argparse.Namespace(protocol=None, kind="room", train_views=3, out_dir=tmp_path)
    name, scene, dataset = fusion_gain.prepare_scene(plain, seed=7)
    assert name == "room-s7-3" and scene == dataset
    assert len(json.loads((scene / "transforms.json").read_text())["train_filenames"]) == 3


def test_fusion_gain_table_pairs_the_two_sides_from_separate_runs():
    """benchmarks/fusion_gain.py run as two --only halves must still print the paired table, with the means."""
    fusion_gain = load_fusion_gain()

    def fused(scene, psnr, repaired):
        rounds = [{"step": 300 * (i + 1), "repaired_psnr": r, "input_psnr": 18.0} for i, r in enumerate(repaired)]
        return {"scene": scene, "method": "genfusion-lite", "psnr": psnr, "ssim": 0.7, "train_seconds": 400.0,
                "repair_seconds": 40.0, "repair": rounds}

    baselines = [{"scene": s, "method": "genfusion-2dgs-lite", "psnr": p, "ssim": 0.6, "train_seconds": 250.0}
                 for s, p in (("a", 17.0), ("b", 18.0), ("c", 30.0))]
    fusions = [fused("a", 19.0, [19.0, 17.0]), fused("b", 19.0, [18.5, 18.0])]

    assert "--compare-with" in fusion_gain.markdown(baselines, "lite")
    table = fusion_gain.markdown(baselines + fusions, "lite").splitlines()
    assert len(table) == 2 + 2 + 1  # header, rule, the two paired scenes (c has no fusion row), the means
    assert "rounds at 300, 600" in table[0]
    assert table[2].startswith("| a | 17.00 / 0.600 | 19.00 / 0.700 | +2.00 | 19.00 vs 18.00 · 17.00 vs 18.00 |")
    assert table[-1].startswith("| **mean** | 17.50 / 0.600 | 19.00 / 0.700 | **+1.50**")
    assert "+0.75 · -0.50" in table[-1] and "(target ≥ +3.0)" in table[-1]
    masked = fusion_gain.markdown(baselines + fusions, "lite", fusion_gain.TARGET_GAIN_DB["masked"]).splitlines()
    assert "(target ≥ +3.9)" in masked[-1]

    # Rounds without input renders and runs without a repair time (e.g. --video-model none) still print.
    bare = {**fused("a", 19.0, [19.0]), "repair_seconds": None}
    del bare["repair"][0]["input_psnr"]
    row = fusion_gain.markdown([baselines[0], bare], "lite").splitlines()[2]
    assert row.endswith("| +2.00 | 19.00 vs n/a | no check | 250 / 400 | n/a |")
