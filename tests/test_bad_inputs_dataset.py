"""Each common dataset mistake stops start-up with one message naming the file (issue 21), before step 0.

A 4-view 32-px scene (2 training views) is generated once per module and copied, then broken, per test; the
checks run through the dataparser and datamanager set-up directly, plus one ``ns-train`` run for the CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from PIL import Image

from genfusion_ns.errors import UserError
from genfusion_ns.method_configs import surfel_datamanager
from genfusion_ns.model import dataparser as dataparser_module
from genfusion_ns.model.dataparser import DatasetError, ValidatedNerfstudioDataParserConfig
from genfusion_ns.model.depth_dataset import OptionalDepthDataset
from genfusion_ns.scenes.generate import generate_scene

TRAIN_IMAGE = (
    "images/frame_00002.png"  # a training view that is not frame 0 (nerfstudio opens frame 0 itself)
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad_inputs") / "scene"
    generate_scene(out=out, views=4, train_views=2, resolution=32)
    return out


@pytest.fixture
def scene(pristine, tmp_path) -> Path:
    """A fresh, valid copy of the scene to break."""
    return Path(shutil.copytree(pristine, tmp_path / "scene"))


def parse(data: Path, split: str = "train", **options):
    return (
        ValidatedNerfstudioDataParserConfig(data=data, load_3D_points=True, **options)
        .setup()
        .get_dataparser_outputs(split)
    )


def edit_transforms(scene: Path, edit) -> None:
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def expect(message: str, data: Path, split: str = "train", **options) -> DatasetError:
    with pytest.raises(DatasetError, match=message) as info:
        parse(data, split, **options)
    return info.value


def test_valid_scene_parses_exactly_like_nerfstudio(scene):
    for split in ("train", "val"):
        ours = parse(scene, split)
        theirs = (
            NerfstudioDataParserConfig(data=scene, load_3D_points=True).setup().get_dataparser_outputs(split)
        )
        assert ours.image_filenames == theirs.image_filenames and len(ours.image_filenames) == 2
        assert torch.equal(ours.cameras.camera_to_worlds, theirs.cameras.camera_to_worlds)
        assert torch.equal(ours.metadata["points3D_xyz"], theirs.metadata["points3D_xyz"])
        assert ours.metadata["depth_filenames"] == theirs.metadata["depth_filenames"]


def test_recipe_datamanager_uses_the_validating_parser_with_todays_settings():
    parser = surfel_datamanager().dataparser
    assert type(parser) is ValidatedNerfstudioDataParserConfig
    reference = ValidatedNerfstudioDataParserConfig(load_3D_points=True)
    assert parser == reference and parser.load_3D_points is True
    plain = NerfstudioDataParserConfig(load_3D_points=True)
    fields = set(vars(plain)) - {"_target"}
    assert {name: getattr(parser, name) for name in fields} == {name: getattr(plain, name) for name in fields}


def test_cli_and_saved_config_keep_the_validating_parser():
    """``ns-train genfusion-2dgs-lite nerfstudio-data ...`` keeps our parser; config.yml reloads it."""
    import tyro
    import yaml
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    args = ["genfusion-2dgs-lite", "nerfstudio-data", "--downscale-factor", "2"]
    parser = tyro.cli(AnnotatedBaseConfigUnion, args=args).pipeline.datamanager.dataparser
    assert type(parser) is ValidatedNerfstudioDataParserConfig
    assert parser.downscale_factor == 2 and parser.load_3D_points is True
    reloaded = yaml.load(yaml.dump(parser), Loader=yaml.Loader)
    assert type(reloaded) is ValidatedNerfstudioDataParserConfig and reloaded == parser


def test_dataset_error_is_a_user_error_and_a_value_error():
    assert issubclass(DatasetError, UserError) and issubclass(DatasetError, ValueError)


def test_missing_data_folder(tmp_path):
    error = expect("does not exist. Pass --data", tmp_path / "no_such_scene")
    assert "no_such_scene" in str(error)


def test_missing_transforms_json(scene):
    (scene / "transforms.json").unlink()
    expect(r"has no transforms\.json\. Pass --data", scene)


def test_truncated_transforms_json(scene):
    truncate(scene / "transforms.json")
    expect(
        r"transforms\.json is not valid JSON \(.* at line \d+, column \d+\); the file looks truncated", scene
    )


def test_no_frames(scene):
    edit_transforms(scene, lambda meta: meta.update(frames=[]))
    expect(r"lists no frames", scene)


def test_zero_training_frames(scene):
    edit_transforms(scene, lambda meta: meta.update(train_filenames=[]))
    expect(r"gives no training frames \(train_filenames is empty\)", scene)


def test_image_size_differs_from_its_camera(scene):
    edit_transforms(scene, lambda meta: meta.update(w=40))
    expect(
        r"frame_00000\.png is 32x32 pixels but its camera in transforms\.json \(w, h\) is 40x32\. Fix w/h",
        scene,
    )


def test_image_size_respects_the_downscale_folder(scene):
    """``images_2/`` at half size is what ``--downscale-factor 2`` reads: valid; one wrong image is not."""
    shutil.copytree(scene / "depths", scene / "depths_2")  # nerfstudio reads depths_2/ too (and resizes them)
    (scene / "images_2").mkdir()
    for image in sorted((scene / "images").iterdir()):
        Image.open(image).resize((16, 16)).save(scene / "images_2" / image.name)
    assert len(parse(scene, downscale_factor=2).image_filenames) == 2
    Image.open(scene / TRAIN_IMAGE).resize((20, 16)).save(scene / "images_2" / Path(TRAIN_IMAGE).name)
    expect(
        r"images_2/frame_00002\.png is 20x16 pixels but .* downscale factor 2 .* is 16x16",
        scene,
        downscale_factor=2,
    )


def test_truncated_image_is_named(scene):
    truncate(scene / TRAIN_IMAGE)
    expect(r"Image .*frame_00002\.png cannot be decoded \(.*truncated.*\)", scene)


@pytest.mark.parametrize("image", ["images/frame_00000.png", TRAIN_IMAGE])
def test_missing_image_is_named(scene, image):
    """Frame 0 is opened by nerfstudio while parsing (auto downscale); the others only when caching."""
    (scene / image).unlink()
    expect(
        rf"Image .*{re.escape(Path(image).name)}.* does not exist\. Restore it, or remove its frame", scene
    )


def test_nan_pose_is_named(scene):
    def poison(meta):
        meta["frames"][2]["transform_matrix"][0][3] = float("nan")

    edit_transforms(scene, poison)
    expect(r"frame 2 \('images/frame_00002\.png'\) has NaN or infinite values in its transform_matrix", scene)


def test_corrupt_depth_png_is_named_at_datamanager_setup(scene):
    """Not ``'FullImageDatamanager' object has no attribute 'cached_train'`` at step 0: named when set up."""
    truncate(scene / "depths" / "frame_00002.png")
    config = surfel_datamanager()
    config.data = scene
    with pytest.raises(DatasetError, match=r"Depth file .*depths/frame_00002\.png .* cannot be decoded"):
        config.setup(device="cpu", test_mode="val")


def test_corrupt_depth_read_later_is_named_too(scene):
    """A depth file that breaks after start-up (or skipped validation) still names the file."""
    outputs = (
        NerfstudioDataParserConfig(data=scene, load_3D_points=True).setup().get_dataparser_outputs("train")
    )
    truncate(outputs.metadata["depth_filenames"][1])
    dataset = OptionalDepthDataset(outputs)
    with pytest.raises(DatasetError, match=r"Depth file .*frame_00002\.png cannot be decoded"):
        dataset.get_data(1, image_type="uint8")


def test_masked_dataset_parses_and_a_wrong_size_mask_is_named(scene, tmp_path):
    from genfusion_ns.protocols.masked import MaskedProtocolConfig, make_masked_dataset

    masked = tmp_path / "masked"
    make_masked_dataset(MaskedProtocolConfig(source=scene, output=masked, seed=3))
    outputs = parse(masked)
    assert len(outputs.mask_filenames) == len(outputs.image_filenames) > 1
    mask, image = Path(outputs.mask_filenames[1]), Path(outputs.image_filenames[1])
    Image.open(mask).resize((16, 16)).save(mask)
    expect(
        rf"Mask .*{re.escape(mask.name)} \(of {re.escape(image.name)}\) is 16x16 pixels but its image is 32x",
        masked,
    )


def test_missing_seed_point_file_is_refused(scene):
    (scene / "sparse_points.ply").unlink()
    expect(
        r"names ply_file_path 'sparse_points\.ply' but .* does not exist\. Restore the seed-point file", scene
    )


def test_inference_mode_reads_no_images(scene):
    """ns-viewer / ns-export preset downscale_factor 1 and never open images: neither do the checks."""
    truncate(scene / TRAIN_IMAGE)
    (scene / "sparse_points.ply").unlink()
    parser = ValidatedNerfstudioDataParserConfig(data=scene, load_3D_points=True).setup()
    parser.downscale_factor = 1
    assert len(parser.get_dataparser_outputs("train").image_filenames) == 2


def test_each_file_is_decoded_once(scene, monkeypatch):
    decoded: list[Path] = []
    original = dataparser_module._image_problem

    def counting(path, bands, decode=True):
        decoded.extend([path] if decode else [])
        return original(path, bands, decode)

    monkeypatch.setattr(dataparser_module, "_image_problem", counting)
    parser = ValidatedNerfstudioDataParserConfig(data=scene, load_3D_points=True, eval_mode="all").setup()
    edit_transforms(
        scene, lambda meta: [meta.pop(key) for key in ("train_filenames", "val_filenames", "test_filenames")]
    )
    parser.get_dataparser_outputs("train")
    parser.get_dataparser_outputs("val")  # eval-mode all: the same 4 images
    assert sorted(p.name for p in decoded) == [f"frame_0000{i}.png" for i in range(4)]


def test_uncaught_dataset_error_prints_one_line_without_traceback(capsys):
    error = DatasetError("Image x.png cannot be decoded [bracketed]")
    from genfusion_ns import errors

    errors._print_user_errors(DatasetError, error, None)
    out = capsys.readouterr()
    assert "error: Image x.png cannot be decoded [bracketed]" in out.err and "Traceback" not in out.err


@pytest.mark.slow
def test_ns_train_prints_the_message_not_a_traceback(scene, tmp_path):
    truncate(scene / TRAIN_IMAGE)
    env = dict(os.environ, TORCHDYNAMO_DISABLE="1", COLUMNS="200")
    args = [
        sys.executable,
        "-m",
        "nerfstudio.scripts.train",
        "genfusion-2dgs-lite",
        "--data",
        str(scene),
        "--output-dir",
        str(tmp_path / "outputs"),
        "--max-num-iterations",
        "1",
        "--machine.device-type",
        "cpu",
        "--viewer.quit-on-train-completion",
        "True",
        "--vis",
        "tensorboard",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(r"frame_00002\.png cannot be decoded", output), output
    assert "Traceback" not in output, output
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
