"""Nothing lost: no command deletes or overwrites what it did not create, whatever the flags (issues 20, 21).

Every case uses hand-made folders or 4-view 8-px generated scenes and calls the commands in-process; each checks
both the refusal (its message says what was wrong) and that the files it protects are byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from genfusion_ns.outputs import MARKER, exit_with_error, made_by, partial_folder, write_marker
from genfusion_ns.protocols import MaskedProtocolConfig, MaskedProtocolError, make_masked_dataset
from genfusion_ns.protocols.sparse_views import SparseProtocolConfig, SparseProtocolError, make_sparse_dataset
from genfusion_ns.scenes import generate_scene
from genfusion_ns.scenes.config import SceneConfigError


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` with its content hash (folders and links by name), to prove nothing changed."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            entries[key] = "link:" + os.readlink(path)
        elif path.is_file():
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[key] = "dir"
    return entries


def tiny_scene(out: Path) -> Path:
    return generate_scene(out, seed=3, views=4, train_views=2, resolution=8, points_per_view=20).out


def user_folder(path: Path) -> Path:
    """A folder no GenFusion command made, with the user's work in it."""
    (path / "results").mkdir(parents=True)
    (path / "results" / "thesis.txt").write_text("months of work")
    return path


# ------------------------------------------------------------------------------------ inputs inside the output


def _train_video(data: Path, output: Path, init: str) -> None:
    from diffusion_train.train import TrainVideoConfig, train

    train(TrainVideoConfig(data=(data,), output=output, init=init, overwrite=True, max_steps=1))


def _train_vae(data: Path, output: Path, init: str) -> None:
    from diffusion_train.train_vae import TrainVaeConfig, train_vae

    train_vae(TrainVaeConfig(data=(data,), output=output, init=init, overwrite=True, max_steps=1))


@pytest.mark.parametrize("command", ["genfusion-train-video", "genfusion-train-vae"])
@pytest.mark.parametrize("held", ["--init", "--data"])
def test_training_overwrite_never_deletes_its_own_inputs(tmp_path, command, held):
    """``--output runs/v --init runs/v/pipeline --overwrite`` (or ``--data runs/v/clips``) keeps the input."""
    from diffusion_train.train import TrainVideoError

    run = tmp_path / "runs" / "v"
    (run / "pipeline").mkdir(parents=True)
    (run / "pipeline" / "model_index.json").write_text("{}")
    (run / "clips" / "scenes").mkdir(parents=True)
    (run / "clips" / "manifest.json").write_text("{}")
    (tmp_path / "clips").mkdir()
    write_marker(run, command)  # an earlier run of this very command: only the input protects it
    before = snapshot(run)
    data, init = (run / "clips", "random:tiny") if held == "--data" else (tmp_path / "clips", str(run / "pipeline"))
    launch = _train_video if command == "genfusion-train-video" else _train_vae
    with pytest.raises(TrainVideoError, match=f"holds {held} .*--overwrite would delete it"):
        launch(data, run, init)
    assert snapshot(run) == before


def test_make_data_never_writes_into_a_scene(tmp_path):
    from diffusion_train.make_data import MakeDataConfig, MakeDataError, make_data

    scene = tmp_path / "scene"
    scene.mkdir()
    (scene / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "a.png", "depth_file_path": "d.png"}]}))
    before = snapshot(scene)
    for output, message in ((scene, "is the scene .* itself"), (scene / "clips", "is inside the scene")):
        with pytest.raises(MakeDataError, match=message):
            make_data(MakeDataConfig(scenes=(str(scene),), output=output, device="cpu"))
    assert snapshot(scene) == before


def _sparse(source: Path, output: Path, overwrite: bool) -> None:
    make_sparse_dataset(SparseProtocolConfig(source=source, output=output, train_views=2, overwrite=overwrite))


def _masked(source: Path, output: Path, overwrite: bool) -> None:
    make_masked_dataset(MaskedProtocolConfig(source=source, output=output, overwrite=overwrite))


PROTOCOL_TOOLS = {"genfusion-sparse-split": (_sparse, SparseProtocolError),
                  "genfusion-mask-dataset": (_masked, MaskedProtocolError)}


@pytest.mark.parametrize("command", list(PROTOCOL_TOOLS))
@pytest.mark.parametrize(("where", "message"), [("parent", "holds the source dataset .*--overwrite would delete"),
                                                ("same", "is the source dataset .* itself"),
                                                ("inside", "is inside the source dataset")])
def test_protocol_tools_never_touch_their_source(tmp_path, command, where, message):
    """--output a parent of the source, the source itself or a folder inside it: refused even with --overwrite."""
    write, error = PROTOCOL_TOOLS[command]
    source = tiny_scene(tmp_path / "parent" / "scene")
    output = {"parent": tmp_path / "parent", "same": source, "inside": source / "variant"}[where]
    if where == "inside":
        output.mkdir()
    write_marker(output, command)  # as if this tool had written it: only the source relation protects it
    before = snapshot(tmp_path / "parent")
    with pytest.raises(error, match=message):
        write(source, output, True)
    assert snapshot(tmp_path / "parent") == before


# ------------------------------------------------------------------------------------ the marker


def _bench(folder: Path) -> None:
    from genfusion_ns.bench.cli import run_bench
    from genfusion_ns.bench.config import BenchConfig

    # A missing scene: were the folder accepted, the bench would stop right after, never training anything.
    run_bench(BenchConfig(output=folder, scenes=(str(folder.parent / "no-scene"),), device="cpu",
                          methods=("genfusion-2dgs-lite",)), command="pytest")


def _convert(folder: Path) -> None:
    from genfusion_ns.video.convert import convert_checkpoint

    convert_checkpoint(folder.parent / "model.ckpt", folder, overwrite=True)


def _demo(folder: Path) -> None:
    from genfusion_ns.demo import DemoConfig, run_demo

    # An unknown method and a tiny scene: were the folder accepted, the demo would stop before training.
    run_demo(DemoConfig(out=folder, overwrite=True, methods=("no-such-method",), parallel=False, views=4,
                        train_views=2, resolution=8, max_steps=2, video_model="random-tiny"))


def _scene(folder: Path) -> None:
    generate_scene(folder, seed=3, views=4, train_views=2, resolution=8, overwrite=True)


def _sparse_foreign(folder: Path) -> None:
    _sparse(tiny_scene(folder.parent / "source"), folder, True)


def _masked_foreign(folder: Path) -> None:
    _masked(tiny_scene(folder.parent / "source"), folder, True)


@pytest.mark.parametrize("write", [_scene, _demo, _convert, _bench, _sparse_foreign, _masked_foreign],
                         ids=["scene", "demo", "convert", "bench", "sparse-split", "mask-dataset"])
def test_overwrite_refuses_folders_the_command_did_not_make(tmp_path, write):
    folder = user_folder(tmp_path / "mine")
    before = snapshot(folder)
    with pytest.raises(Exception, match="was not written by genfusion-[a-z-]+") as refusal:
        write(folder)
    assert "delete it yourself" in str(refusal.value).lower() or "not empty" in str(refusal.value)
    assert snapshot(folder) == before


def test_marker_decides_what_overwrite_may_replace(tmp_path):
    out = tmp_path / "scene"
    out.mkdir()  # an empty folder is fine without a marker
    tiny_scene(out)
    assert made_by(out) == "genfusion-scene"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SceneConfigError, match="earlier genfusion-scene output; pass --overwrite"):
        tiny_scene(out)
    _scene(out)  # its own earlier output: replaced
    assert not (out / "notes.txt").exists() and made_by(out) == "genfusion-scene"

    before = snapshot(out)  # another command's folder is not this command's to replace
    with pytest.raises(SparseProtocolError, match="was written by genfusion-scene, not by genfusion-sparse-split"):
        _sparse(tiny_scene(tmp_path / "source"), out, True)
    (out / MARKER).unlink()  # no marker: the message says to delete it by hand
    with pytest.raises(SceneConfigError, match="no .* marker.*will not delete it. Delete it yourself"):
        _scene(out)
    assert {k: v for k, v in snapshot(out).items() if k != MARKER} == {k: v for k, v in before.items() if k != MARKER}


def test_protocol_outputs_never_write_through_to_the_source(tmp_path):
    """The source's own marker is not linked into the new dataset (writing the new marker would go through it)."""
    source = tiny_scene(tmp_path / "source")
    before = snapshot(source)
    _sparse(source, tmp_path / "sparse", False)
    _sparse(source, tmp_path / "sparse", True)  # its own output: replaced
    _masked(source, tmp_path / "masked", False)
    assert made_by(tmp_path / "sparse") == "genfusion-sparse-split" and not (tmp_path / "sparse" / MARKER).is_symlink()
    assert made_by(tmp_path / "masked") == "genfusion-mask-dataset"
    assert snapshot(source) == before


# ------------------------------------------------------------------------------------ half-written outputs


def test_failed_write_leaves_no_dataset_and_keeps_the_old_one(tmp_path, monkeypatch):
    from genfusion_ns.scenes import generate

    out = tiny_scene(tmp_path / "scene")
    before = snapshot(out)

    def crash(folder: Path, *args) -> None:
        (folder / "images").mkdir()
        (folder / "images" / "frame_00000.png").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(generate, "write_dataset", crash)
    with pytest.raises(OSError, match="disk full"):
        _scene(out)  # --overwrite of its own output, failing half-way
    assert snapshot(out) == before and not partial_folder(out).exists()
    with pytest.raises(OSError, match="disk full"):
        generate_scene(tmp_path / "new", seed=3, views=4, train_views=2, resolution=8)
    assert not (tmp_path / "new").exists() and not partial_folder(tmp_path / "new").exists()


def test_crashed_run_is_recognisable_and_cleaned_by_the_next(tmp_path):
    out = tmp_path / "scene"
    killer = ("import os, sys; import genfusion_ns.scenes.generate as g; "
              "g.write_dataset = lambda folder, *a: ((folder / 'transforms.json').write_text('{}'), os._exit(9)); "
              "g.generate_scene(sys.argv[1], views=4, train_views=2, resolution=8)")
    assert subprocess.run([sys.executable, "-c", killer, str(out)], check=False, timeout=120).returncode == 9
    assert not out.exists()  # the half-written dataset never sits where a finished one would
    partial = partial_folder(out)
    assert (partial / "transforms.json").is_file() and made_by(partial) == "genfusion-scene"
    tiny_scene(out)
    assert (out / "scene.json").is_file() and not partial.exists()

    other = tmp_path / "other"
    user_folder(partial_folder(other))  # a *.partial folder the command did not make is never removed
    with pytest.raises(SceneConfigError, match="was not written by genfusion-scene"):
        tiny_scene(other)
    assert (partial_folder(other) / "results" / "thesis.txt").read_text() == "months of work"


# ------------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(("resolution", "aspect", "message"), [
    (1, 1.0, "--resolution must be between 3 and 4096"),
    (2, 1.0, "--resolution must be between 3 and 4096"),
    (8, 0.25, "2 px wide"),
])
def test_resolution_too_small_to_train_is_refused(tmp_path, resolution, aspect, message):
    with pytest.raises(SceneConfigError, match=message):
        generate_scene(tmp_path / "s", views=4, train_views=2, resolution=resolution, aspect=aspect)
    assert not (tmp_path / "s").exists()
    summary = generate_scene(tmp_path / "ok", views=4, train_views=2, resolution=3)  # the smallest that trains
    assert json.loads((summary.out / "transforms.json").read_text())["h"] == 3


def _not_a_checkpoint(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("model: genfusion\nsteps: 34000\n")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights/readme.txt", "not a torch checkpoint")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    return path  # "missing": never created


@pytest.mark.parametrize(("kind", "message"), [
    ("random", "is not a PyTorch checkpoint"), ("text", "is not a PyTorch checkpoint"),
    ("zip", "is not a PyTorch checkpoint"), ("empty", "is not a PyTorch checkpoint"),
    ("folder", "is a folder"), ("missing", "does not exist"),
])
def test_convert_explains_a_file_that_is_not_a_checkpoint(tmp_path, capsys, kind, message):
    from genfusion_ns.video.convert import entrypoint

    checkpoint = _not_a_checkpoint(tmp_path, kind)
    with pytest.raises(SystemExit) as exit_info:
        entrypoint([str(checkpoint), "--out", str(tmp_path / "converted")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith("genfusion-convert: error: ") and message in err, err
    assert not (tmp_path / "converted").exists() and not partial_folder(tmp_path / "converted").exists()


def test_cli_errors_are_one_red_line_on_stderr_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        exit_with_error("genfusion-scene", "--out x is bad; use [bold]y[/bold]")  # markup in a message stays text
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err == "genfusion-scene: error: --out x is bad; use [bold]y[/bold]\n"
