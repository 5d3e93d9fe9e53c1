"""GenFusionModel without a trainer: seeding, rendering, losses, checkpoints, metrics, device-agnostic pieces."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.splatfacto import SplatfactoModel

from genfusion_ns.model import GenFusionModelConfig, SparseAwareStrategy
from genfusion_ns.model import checkpoint as ckpt
from genfusion_ns.model import metrics as gf_metrics
from genfusion_ns.model.genfusion_model import (
    FEEDS_DENSIFICATION_KEY,
    LOSS_WEIGHT_KEY,
    opengl_c2w_to_opencv_w2c,
)

SIZE = 24


def plane_points(n_side=8, z=-2.0, seed=0, half=1.0):
    """A square grid of coloured points on the plane z = const in front of a camera at the origin looking down -z."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.meshgrid(torch.linspace(-half, half, n_side), torch.linspace(-half, half, n_side), indexing="ij")
    xyz = torch.stack([xs.flatten(), ys.flatten(), torch.full((n_side * n_side,), z)], dim=-1)
    rgb = (torch.rand(n_side * n_side, 3, generator=g) * 255).to(torch.uint8)
    return xyz, rgb


def make_model(seed_points=None, **config):
    config.setdefault("sh_degree", 1)
    model = GenFusionModelConfig(**config).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-2.0, -2.0, -3.0], [2.0, 2.0, 1.0]])),
        num_train_data=1,
        seed_points=seed_points,
    )
    return model


def make_opaque(model):
    """Surfels facing the camera with high opacity, so the plane covers the image centre."""
    with torch.no_grad():
        model.gauss_params["quats"].copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        model.gauss_params["opacities"].fill_(4.0)
    return model


def make_camera(metadata=None):
    c2w = torch.eye(4)[None, :3, :4]
    return Cameras(
        camera_to_worlds=c2w,
        fx=torch.tensor([[SIZE * 1.0]]),
        fy=torch.tensor([[SIZE * 1.0]]),
        cx=torch.tensor([[SIZE / 2]]),
        cy=torch.tensor([[SIZE / 2]]),
        width=torch.tensor([[SIZE]]),
        height=torch.tensor([[SIZE]]),
        metadata=metadata,
    )


def test_model_is_a_splatfacto_model_seeded_from_points():
    xyz, rgb = plane_points()
    model = make_model((xyz, rgb))
    assert isinstance(model, SplatfactoModel)
    assert model.num_points == len(xyz) and torch.equal(model.means.detach(), xyz)
    assert torch.allclose(model.colors.detach(), rgb.float() / 255.0, atol=1e-5)
    scales = torch.exp(model.scales.detach())
    assert torch.allclose(scales[:, 2], scales[:, 0] * 1e-3, rtol=1e-4)  # flat surfels
    assert not any(key.startswith("lpips") for key in model.state_dict())  # nothing downloaded or saved


def test_random_init_when_no_points():
    model = make_model(None, num_random=300, random_scale=2.0)
    assert model.num_points == 300 and model.means.abs().max() <= 1.0
    few = make_model((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.uint8)), num_random=100)
    assert few.num_points == 100


def test_seed_points_capped_to_a_random_subset():
    xyz, rgb = plane_points(n_side=10)
    capped = make_model((xyz, rgb), max_init_points=30)
    assert capped.num_points == 30
    kept = capped.means.detach()
    assert (torch.cdist(kept, xyz).min(dim=1).values == 0).all() and len(torch.unique(kept, dim=0)) == 30


def test_lite_recipe_seeds_every_point_of_a_default_dense_scene():
    """The lite budget relies on starting from all seed points (docs/benchmarks.md): the cap must not subsample a
    default ``genfusion-scene`` dataset, and the model must then keep every point."""
    from genfusion_ns.method_configs import lite_model
    from genfusion_ns.scenes.config import SceneConfig

    scene = SceneConfig(out=Path("unused"), train_views="all")
    dense_train_views = scene.views - math.ceil(scene.views / 8)
    recipe = lite_model()
    assert recipe.max_init_points >= scene.points_per_view * dense_train_views
    xyz, rgb = plane_points(n_side=40)
    config = {k: getattr(recipe, k) for k in ("max_init_points", "sh_degree", "supersample")}
    assert make_model((xyz, rgb), **config).num_points == len(xyz)


def test_config_rejects_bad_weights():
    with pytest.raises(ValueError, match="lambda_dssim"):
        GenFusionModelConfig(lambda_dssim=1.5)
    with pytest.raises(ValueError, match="lambda_normal"):
        GenFusionModelConfig(lambda_normal=-1.0)


def test_viewmat_conversion_matches_nerfstudio_convention():
    c2w = torch.tensor([[[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0]]])
    viewmat = opengl_c2w_to_opencv_w2c(c2w)
    point_in_front = c2w[0, :, 3] - c2w[0, :, 2]  # one unit along the camera's viewing direction (-z in OpenGL)
    cam = viewmat[0] @ torch.cat([point_in_front, torch.ones(1)])
    assert torch.allclose(cam[:3], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # OpenCV: +z forward


def test_eval_render_outputs_and_depth_of_a_plane():
    model = make_opaque(make_model(plane_points(n_side=12, z=-2.0)))
    model.eval()
    out = model.get_outputs_for_camera(make_camera())
    for key, channels in [("rgb", 3), ("depth", 1), ("accumulation", 1), ("normal", 3), ("normal_image", 3)]:
        assert out[key].shape == (SIZE, SIZE, channels), key
    centre = out["depth"][SIZE // 2 - 2 : SIZE // 2 + 2, SIZE // 2 - 2 : SIZE // 2 + 2]
    assert torch.allclose(centre, torch.full_like(centre, 2.0), atol=1e-3)  # z-depth of the plane
    assert out["accumulation"][SIZE // 2, SIZE // 2] > 0.9


def test_state_dict_roundtrip_renders_identically_and_keeps_parameter_objects():
    trained = make_model(plane_points(n_side=10))
    with torch.no_grad():
        trained.gauss_params["opacities"].uniform_(-1, 2)
        trained.gauss_params["features_rest"].normal_(0, 0.1)
    fresh = make_model(plane_points(n_side=4, seed=1))
    params_before = {k: p for k, p in fresh.gauss_params.items()}
    optimizer = torch.optim.Adam([fresh.gauss_params["means"]], lr=1e-3)  # built before loading, like the Trainer
    fresh.load_state_dict(trained.state_dict())
    assert fresh.num_points == 100
    assert all(fresh.gauss_params[k] is params_before[k] for k in params_before)
    assert optimizer.param_groups[0]["params"][0] is fresh.gauss_params["means"]
    trained.eval()
    fresh.eval()
    trained.step = fresh.step  # loading sets the full SH degree for viewing
    a = trained.get_outputs_for_camera(make_camera())
    b = fresh.get_outputs_for_camera(make_camera())
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["depth"], b["depth"])


def _train_batch(model, depth=None, weight=None):
    batch = {"image": torch.full((SIZE, SIZE, 3), 0.5), "image_idx": 0}
    if depth is not None:
        batch["depth_image"] = depth
    if weight is not None:
        batch[LOSS_WEIGHT_KEY] = weight
    return batch


def test_loss_terms_switch_on_at_their_steps_and_follow_view_weight():
    model = make_model(
        plane_points(n_side=12), lambda_dist=10.0, dist_start_step=100, normal_start_step=200, depth_loss="metric-l1"
    )
    make_opaque(model).train()
    camera = make_camera()
    depth = torch.full((SIZE, SIZE, 1), 2.5)
    model.step = 100
    outputs = model.get_outputs(camera)
    losses = model.get_loss_dict(outputs, _train_batch(model, depth))
    assert set(losses) == {"main_loss", "depth_loss"}
    model.step = 201
    losses = model.get_loss_dict(outputs, _train_batch(model, depth))
    assert set(losses) == {"main_loss", "depth_loss", "distortion_loss", "normal_loss"}
    weighted = model.get_loss_dict(outputs, _train_batch(model, depth, weight=0.25))
    for key in losses:
        assert weighted[key].item() == pytest.approx(0.25 * losses[key].item(), rel=1e-5), key
    assert losses["depth_loss"].item() > 0.1  # the plane is at 2.0, the target says 2.5


def test_densification_statistics_skip_views_flagged_by_metadata():
    model = make_model(plane_points(), densification=SparseAwareStrategy(refine_start_step=10**6))
    model.train()
    model.optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in model.gauss_params.items()}
    for feeds, expected in [(True, 1.0), (False, 1.0), (None, 2.0)]:
        metadata = None if feeds is None else {FEEDS_DENSIFICATION_KEY: feeds}
        model.step = 1
        outputs = model.get_outputs(make_camera(metadata))
        model.get_loss_dict(outputs, _train_batch(model))["main_loss"].backward()
        model.step_post_backward(1)
        assert model.strategy_state["visible_count"].max().item() == expected


def test_lpips_left_out_with_one_warning_when_weights_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(gf_metrics, "_WARNED", False)
    model = make_model(plane_points())
    model.eval()
    camera = make_camera()
    outputs = model.get_outputs_for_camera(camera)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics, images = model.get_image_metrics_and_images(outputs, {"image": outputs["rgb"].clone()})
        assert gf_metrics.load_lpips_if_available(torch.device("cpu")) is None
    assert set(metrics) == {"psnr", "ssim"} and metrics["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert math.isinf(metrics["psnr"]) or metrics["psnr"] > 60
    assert sum("LPIPS" in str(w.message) for w in caught) == 1
    assert images["img"].shape == (SIZE, 2 * SIZE, 3)


def test_checkpoints_with_numpy_scalars_load_with_weights_only(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"lr": np.float64(1.6e-4), "count": np.int64(3), "weights": torch.ones(2)}, path)
    torch.serialization.clear_safe_globals()
    with pytest.raises(Exception, match="numpy"):
        torch.load(path, weights_only=True)
    ckpt.allow_numpy_scalars_in_checkpoints()
    loaded = torch.load(path, weights_only=True)
    assert loaded["lr"] == pytest.approx(1.6e-4) and loaded["count"] == 3


def test_viewer_render_path_with_background_and_crop_box():
    """What ns-viewer does for a SplatfactoModel: set the background, eval mode, render with an optional crop box."""
    from nerfstudio.data.scene_box import OrientedBox

    model = make_opaque(make_model(plane_points(n_side=12, half=0.6), background_color="random"))
    model.set_background(torch.tensor([0.0, 0.0, 1.0]))
    model.eval()
    full = model.get_outputs_for_camera(make_camera())
    assert torch.allclose(full["rgb"][0, 0], torch.tensor([0.0, 0.0, 1.0]), atol=1e-4)  # viewer background
    centre_rows = slice(SIZE // 2 - 3, SIZE // 2 + 3)
    assert full["accumulation"][centre_rows, SIZE // 2 + 3 : SIZE // 2 + 6].mean() > 0.8
    left_half = OrientedBox(R=torch.eye(3), T=torch.tensor([-1.0, 0.0, -2.0]), S=torch.tensor([2.0, 4.0, 1.0]))
    cropped = model.get_outputs_for_camera(make_camera(), obb_box=left_half)
    # World x points right in the image: only the plane's left half survives the crop.
    assert cropped["accumulation"][centre_rows, SIZE // 2 - 6 : SIZE // 2 - 3].mean() > 0.8
    assert cropped["accumulation"][:, SIZE // 2 + 6 :].max() < 1e-3  # beyond the kept surfels' footprints
    empty = OrientedBox(R=torch.eye(3), T=torch.tensor([0.0, 0.0, 5.0]), S=torch.ones(3))
    nothing = model.get_outputs_for_camera(make_camera(), obb_box=empty)
    assert nothing["accumulation"].max() == 0 and nothing["rgb"].shape == (SIZE, SIZE, 3)


def test_shared_psnr_matches_for_arrays_and_tensors():
    a, b = np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.1)
    assert gf_metrics.psnr(a, b) == pytest.approx(20.0)
    assert gf_metrics.psnr(torch.tensor(a, dtype=torch.float32), torch.tensor(b)) == pytest.approx(20.0, abs=1e-5)
    assert gf_metrics.psnr(a, a) == pytest.approx(120.0)  # identical images: capped, not infinite


def test_supersampled_render_is_the_box_filter_of_a_finer_render():
    model = make_opaque(make_model(plane_points(n_side=12, z=-2.0), supersample=2))
    reference = make_opaque(make_model(plane_points(n_side=12, z=-2.0)))
    model.eval()
    reference.eval()
    out = model.get_outputs_for_camera(make_camera())
    fine_camera = make_camera()
    fine_camera.rescale_output_resolution(2)  # sub-pixel centres at (k + 0.5) / 2: the same rays
    fine = reference.get_outputs_for_camera(fine_camera)
    assert out["rgb"].shape == (SIZE, SIZE, 3) and out["normal_image"].shape == (SIZE, SIZE, 3)
    expected = fine["rgb"].reshape(SIZE, 2, SIZE, 2, 3).mean(dim=(1, 3))
    assert torch.allclose(out["rgb"], expected, atol=1e-5)
    alpha = fine["accumulation"].reshape(SIZE, 2, SIZE, 2, 1).mean(dim=(1, 3))
    assert torch.allclose(out["accumulation"], alpha, atol=1e-5)
    centre = out["depth"][SIZE // 2 - 2 : SIZE // 2 + 2, SIZE // 2 - 2 : SIZE // 2 + 2]
    assert torch.allclose(centre, torch.full_like(centre, 2.0), atol=1e-3)
    # Aliasing is what it removes: the one-ray render differs from the filtered one.
    assert not torch.allclose(reference.get_outputs_for_camera(make_camera())["rgb"], out["rgb"], atol=1e-3)


def test_supersampled_training_keeps_regularisers_per_ray_and_densification_in_output_pixels():
    model = make_opaque(make_model(plane_points(n_side=12, z=-2.0), supersample=2))
    model.train()
    model.step = 1
    outputs = model.get_outputs(make_camera())
    assert outputs["rgb"].shape == (SIZE, SIZE, 3)
    assert outputs["normal"].shape == (2 * SIZE, 2 * SIZE, 3) and outputs["distortion"].shape[:2] == (2 * SIZE,) * 2
    info, _ = model._step_renders[-1]
    assert (info["width"], info["height"]) == (2 * SIZE, 2 * SIZE)  # gradients are per rendered sub-pixel
    reference = make_opaque(make_model(plane_points(n_side=12, z=-2.0)))
    reference.train()
    reference.get_outputs(make_camera())
    ref_info, _ = reference._step_renders[-1]
    visible = ref_info["radii"] > 0
    assert torch.allclose(info["radii"][visible].float(), ref_info["radii"][visible].float(), atol=1.0)


def test_frames_larger_than_supersample_max_side_render_one_ray_per_pixel():
    capped = make_opaque(make_model(plane_points(n_side=12, z=-2.0), supersample=2, supersample_max_side=SIZE - 1))
    plain = make_opaque(make_model(plane_points(n_side=12, z=-2.0)))
    capped.train()
    capped.step = 1
    capped.get_outputs(make_camera())
    info, _ = capped._step_renders[-1]
    assert (info["width"], info["height"]) == (SIZE, SIZE)
    capped.eval()
    plain.eval()
    assert torch.equal(capped.get_outputs_for_camera(make_camera())["rgb"],
                       plain.get_outputs_for_camera(make_camera())["rgb"])
    assert capped.supersample_factor(SIZE - 1, 8) == 2 and capped.supersample_factor(8, SIZE) == 1
    from genfusion_ns.method_configs import lite_model

    lite = make_model(**{k: getattr(lite_model(), k) for k in ("supersample", "supersample_max_side")})
    assert lite.supersample_factor(96, 96) == 2 and lite.supersample_factor(160, 120) == 1


def test_config_rejects_bad_supersample():
    with pytest.raises(ValueError, match="supersample"):
        GenFusionModelConfig(supersample=0)
    with pytest.raises(ValueError, match="supersample_max_side"):
        GenFusionModelConfig(supersample=2, supersample_max_side=0)


def test_exposure_compensation_learns_a_brighter_photo_and_leaves_other_views_alone():
    from genfusion_ns.model.exposure import ExposureCompensation

    exposure = ExposureCompensation(2)
    optimizer = torch.optim.Adam(exposure.parameters(), lr=0.05)
    render = torch.rand(8, 8, 3) * 0.5
    photos = [render * 1.3, render * 0.7]  # one over-, one under-exposed photo of the same render
    for _ in range(300):
        optimizer.zero_grad()
        loss = sum(torch.nn.functional.mse_loss(exposure(render, i), photos[i]) for i in range(2))
        loss.backward()
        optimizer.step()
    gain, offset = exposure.affine()
    assert gain[0].mean() > 1.2 and gain[1].mean() < 0.8
    assert torch.log(gain).mean().abs() < 1e-6 and offset.mean().abs() < 1e-6  # the mean stays at identity
    assert torch.equal(exposure(render, 2), render)  # not a photo (a repaired frame): as rendered


def test_model_exposure_group_only_when_asked_and_applied_in_the_training_loss():
    plain = make_model(plane_points())
    assert "exposure" not in plain.get_param_groups()
    model = make_opaque(make_model(plane_points(), exposure_compensation=True))
    assert [p.shape for p in model.get_param_groups()["exposure"]] == [(1, 3), (1, 3)]
    model.exposure = type(model.exposure)(2)
    with torch.no_grad():
        model.exposure.log_gain[0] = 0.5
    model.train()
    outputs = model.get_outputs(make_camera())
    brighter = model.get_loss_dict(outputs, _train_batch(model))["main_loss"]
    model.exposure = None
    as_rendered = model.get_loss_dict(outputs, _train_batch(model))["main_loss"]
    assert not torch.isclose(brighter, as_rendered)
