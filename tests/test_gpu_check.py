"""``benchmarks/gpu_check.py`` on CPU: every GPU part is recorded as skipped, the reports are written, and the
part runner survives parts that fail, time out or find no time left (the GPU itself is never needed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays a zombie until some init reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_cpu_run_records_every_gpu_part_as_skipped(tmp_path: Path, gpu_check: ModuleType) -> None:
    out = tmp_path / "gpu_report"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA, even on a GPU machine
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert time.monotonic() - started < 60
    assert "No CUDA device is visible" in run.stdout

    report = json.loads((out / "report.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    assert tuple(parts) == gpu_check.PART_NAMES
    assert parts["env"]["status"] == "ok" and parts["env"]["metrics"]["cuda_available"] is False
    for name, part in parts.items():
        if name != "env":
            assert part["status"] == "skipped: no CUDA", part
            assert part["needs_cuda"] and part["passed"] and part["commands"]
    table = (out / "report.md").read_text()
    for name in gpu_check.PART_NAMES:
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert ("skipped: no CUDA" in row) == (name != "env"), row
        assert name in run.stdout  # the printed table
    assert not (out / "work").exists()  # nothing GPU-bound was started


def test_part_runner_records_failures_and_timeouts_and_goes_on(tmp_path: Path, gpu_check: ModuleType) -> None:
    python = sys.executable
    pid_file = tmp_path / "grandchild.pid"
    ok = ("import json, os; json.dump({'answer': 42}, open(os.environ['GPU_CHECK_RESULT'], 'w'))")
    fail = "import sys; print('step 1'); print('RuntimeError: boom', file=sys.stderr); sys.exit(3)"
    # The slow part leaves a grandchild behind: the timeout must end the whole process group.
    slow = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    parts = [
        gpu_check.Part("fail", "fails", 20, [python, "-c", fail], needs_cuda=False),
        gpu_check.Part("slow", "times out", 2, [python, "-c", slow], needs_cuda=False),
        gpu_check.Part("ok", "succeeds", 20, [python, "-c", ok], needs_cuda=False),
        gpu_check.Part("gpu", "needs CUDA", 20, [python, "-c", ok], needs_cuda=True),
    ]
    started = time.monotonic()
    results = {r.name: r for r in gpu_check.run_parts(parts, tmp_path, budget_s=60, cuda=False)}
    assert time.monotonic() - started < 30

    assert results["fail"].status == "failed (exit 3)" and results["fail"].returncode == 3
    assert "RuntimeError: boom" in results["fail"].error and not results["fail"].passed
    assert (tmp_path / "logs" / "fail.log").read_text().splitlines().count("step 1") == 1  # output kept once
    assert results["slow"].status == "timed out after 2 s" and results["slow"].wall_s < 15
    grandchild = int(pid_file.read_text())
    for _ in range(50):
        if not _running(grandchild):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out part's grandchild is still running")
    assert results["ok"].status == "ok" and results["ok"].metrics == {"answer": 42} and results["ok"].passed
    assert results["gpu"].status == "skipped: no CUDA" and results["gpu"].wall_s == 0

    late = gpu_check.run_parts(parts[2:3], tmp_path, budget_s=gpu_check.MIN_PART_S - 1, cuda=True)
    assert late[0].status.startswith("skipped: no time left") and not late[0].passed


def test_out_folder_of_something_else_is_refused(tmp_path: Path, gpu_check: ModuleType) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not written by gpu_check"):
        gpu_check.prepare_out(tmp_path)
