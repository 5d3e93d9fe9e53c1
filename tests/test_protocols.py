"""The masked-input protocol: patch placement, masks nerfstudio loads, untouched source, train/eval splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genfusion_ns.protocols import (
    MaskedProtocolConfig,
    MaskedProtocolError,
    bouncing_patch_path,
    corner_patch_origin,
    make_masked_dataset,
)
from genfusion_ns.protocols.masked import points_in_patches


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from genfusion_ns.scenes import generate_scene

    out = tmp_path_factory.mktemp("protocol") / "scene"
    generate_scene(out, seed=11, views=8, train_views=3, resolution=32, aspect=1.5)
    return out


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bouncing_path_stays_inside_and_moves():
    rng = np.random.default_rng(0)
    path = bouncing_patch_path(200, 960, 540, 480, 270, rng, (5, 30))
    assert path.shape == (200, 2)
    assert (path >= 0).all() and (path[:, 0] < 480).all() and (path[:, 1] < 270).all()
    moves = np.abs(np.diff(path, axis=0))
    assert (moves >= 5).all() and (moves < 30).all()  # every emitted move is one accepted step on both axes
    # it bounces: both directions of travel occur on each axis
    assert (np.diff(path[:, 0]) > 0).any() and (np.diff(path[:, 0]) < 0).any()
    assert (np.diff(path[:, 1]) > 0).any() and (np.diff(path[:, 1]) < 0).any()


def test_corner_origin_is_a_corner():
    corners = {corner_patch_origin(48, 32, 24, 16, np.random.default_rng(s)) for s in range(40)}
    assert corners == {(0, 0), (24, 0), (0, 16), (24, 16)}


def test_corner_protocol_masks_load_in_nerfstudio(scene, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset

    before = _snapshot(scene)
    summary = make_masked_dataset(MaskedProtocolConfig(source=scene, output=tmp_path / "masked", seed=3))
    assert _snapshot(scene) == before  # the source dataset is untouched

    patches = {(p.x, p.y, p.width, p.height) for p in summary.patches}
    assert len(patches) == 1  # one corner for every frame
    x, y, w, h = patches.pop()
    assert (w, h) == (24, 16) and x in (0, 24) and y in (0, 16)

    parser = NerfstudioDataParserConfig(data=tmp_path / "masked").setup()
    outputs = parser.get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 8 and len(outputs.mask_filenames) == 8
    sample = InputDataset(outputs)[0]
    mask = sample["mask"][..., 0].numpy()
    assert mask.shape == (32, 48) and mask.sum() == 24 * 16
    assert mask[y:y + h, x:x + w].all()
    assert sample["image"].shape[:2] == (32, 48)  # images are the full frames of the source


def test_moving_protocol_downsample_splits(scene, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset

    summary = make_masked_dataset(MaskedProtocolConfig(source=scene, output=tmp_path / "moving", placement="moving",
                                                       downsample=4, seed=5))
    assert summary.train_files == ["images/frame_00000.png", "images/frame_00004.png"]
    assert len(summary.eval_files) == 6
    train_patches = [p for p in summary.patches if p.split == "train"]
    assert len({(p.x, p.y) for p in train_patches}) == 2  # the patch moves along the sequence

    parser = NerfstudioDataParserConfig(data=tmp_path / "moving").setup()
    train = InputDataset(parser.get_dataparser_outputs("train"))
    test = InputDataset(parser.get_dataparser_outputs("test"))
    assert len(train) == 2 and len(test) == 6
    assert float(train[0]["mask"].float().mean()) == pytest.approx(0.25)
    assert bool(test[0]["mask"].all())  # evaluation views are full frame

    meta = json.loads((tmp_path / "moving" / "transforms.json").read_text())
    assert meta["ply_file_path"] == "masked_points.ply"
    record = json.loads((tmp_path / "moving" / "masked_protocol.json").read_text())
    assert record["config"]["placement"] == "moving" and len(record["patches"]) == 8


def test_seed_points_are_filtered_to_the_patches(scene):
    meta = json.loads((scene / "transforms.json").read_text())
    frame = min(meta["frames"], key=lambda f: f["file_path"])
    from genfusion_ns.protocols.masked import FramePatch

    patch = FramePatch(frame["file_path"], "masks/x.png", "train", 0, 0, 24, 16)
    depth = np.asarray(Image.open(scene / frame["depth_file_path"]), dtype=np.float64) * meta["depth_unit_scale_factor"]
    c2w = np.asarray(frame["transform_matrix"])
    fx, fy, cx, cy = meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]

    def back_project(u, v):
        z = depth[int(v), int(u)]
        local = np.array([(u - cx) / fx * z, -(v - cy) / fy * z, -z])  # OpenGL camera axes
        return c2w[:3, :3] @ local + c2w[:3, 3]

    inside, outside = back_project(10.5, 8.5), back_project(40.5, 28.5)
    behind = 2 * c2w[:3, 3] - inside  # mirrored behind the camera
    keep = points_in_patches(np.stack([inside, outside, behind]), meta, [frame], [patch])
    assert keep.tolist() == [True, False, False]


def test_refuses_non_empty_output_and_bad_options(scene, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user data")
    with pytest.raises(MaskedProtocolError, match="--overwrite"):
        make_masked_dataset(MaskedProtocolConfig(source=scene, output=tmp_path / "busy"))
    assert (tmp_path / "busy" / "keep.txt").read_text() == "user data"
    with pytest.raises(MaskedProtocolError, match="downsample"):
        make_masked_dataset(MaskedProtocolConfig(source=scene, output=tmp_path / "o", downsample=0))
    with pytest.raises(MaskedProtocolError, match="transforms.json"):
        make_masked_dataset(MaskedProtocolConfig(source=tmp_path, output=tmp_path / "o2"))
    with pytest.raises(MaskedProtocolError, match="inside"):
        make_masked_dataset(MaskedProtocolConfig(source=scene, output=scene / "masked"))


def test_genfusion_model_learns_only_from_the_visible_patch(scene, tmp_path):
    """GenFusionModel's photometric loss has zero gradient outside the protocol's mask."""
    import torch
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset
    from nerfstudio.data.scene_box import SceneBox

    from genfusion_ns.model import GenFusionModelConfig

    make_masked_dataset(MaskedProtocolConfig(source=scene, output=tmp_path / "masked", seed=1))
    batch = InputDataset(NerfstudioDataParserConfig(data=tmp_path / "masked").setup().get_dataparser_outputs())[0]
    model = GenFusionModelConfig(sh_degree=1).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=1,
        seed_points=(torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.uint8)))
    model.train()
    prediction = torch.rand(32, 48, 3, requires_grad=True)
    outputs = {"rgb": prediction, "background": torch.zeros(3)}
    model.get_loss_dict(outputs, batch)["main_loss"].backward()
    visible = batch["mask"][..., 0]
    assert prediction.grad[~visible].abs().max() == 0
    assert prediction.grad[visible].abs().sum() > 0
