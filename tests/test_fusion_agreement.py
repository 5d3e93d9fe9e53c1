"""The repaired-frame check (genfusion_ns/fusion/agreement.py): the warp of a training photo into a novel view is
exact, occluded pixels are rejected, repairs that move away from the photos are skipped and repairs that move
towards them are kept, and the per-frame weights survive the round folder and reach the sampler and the loss."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from genfusion_ns.fusion import agreement
from genfusion_ns.fusion.agreement import CheckSettings, Pinhole, check_frames, warp_training_view
from genfusion_ns.fusion.views import MANIFEST_NAME, RepairedViews

H = W = 40
F = 40.0
PLANE_Z = -5.0  # the world plane z = -5, seen by cameras near the origin looking down -z (OpenGL)


def yaw(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    return torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]],
                        dtype=torch.float64)


def camera(position=(0.0, 0.0, 0.0), degrees: float = 0.0) -> Pinhole:
    c2w = torch.zeros(3, 4, dtype=torch.float64)
    c2w[:, :3] = yaw(degrees)
    c2w[:, 3] = torch.tensor(position, dtype=torch.float64)
    return Pinhole(c2w.float(), F, F, W / 2, H / 2)


def texture(points: torch.Tensor) -> torch.Tensor:
    """Colour linear in world x, y (so a bilinear sample of it, seen by a parallel camera, is exact)."""
    x, y = points[..., 0], points[..., 1]
    return torch.stack([0.5 + 0.08 * x, 0.5 + 0.08 * y, 0.3 + 0.04 * (x - y)], dim=-1).float()


def ray_cast(cam: Pinhole) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent renderer of the textured plane: colour ``[H,W,3]`` and z-depth ``[H,W]`` (OpenGL rays)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    local = torch.stack([(u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -torch.ones_like(u)], dim=-1)
    c2w = cam.camera_to_world.double()
    directions = local @ c2w[:, :3].T
    t = (PLANE_Z - c2w[2, 3]) / directions[..., 2]  # local z is -1: t is the z-depth
    points = c2w[:, 3] + t[..., None] * directions
    return texture(points), t.float()


def test_warp_of_a_plane_equals_the_novel_render():
    novel, train = camera(), camera((0.6, -0.3, 0.2))
    novel_rgb, novel_depth = ray_cast(novel)
    train_rgb, train_depth = ray_cast(train)
    warped, valid = warp_training_view(train_rgb, train_depth, train, novel_depth, novel)
    assert valid.float().mean() > 0.6  # most of the novel view is seen by the shifted camera
    assert not valid.all()  # the band the shift moves out of the photo is rejected
    assert torch.allclose(warped[valid], novel_rgb[valid], atol=1e-5)
    # A rotated camera: the plane's homography is no longer affine; bilinear sampling is then only close.
    rotated = camera((0.4, 0.0, 0.0), degrees=12.0)
    rot_rgb, rot_depth = ray_cast(rotated)
    warped, valid = warp_training_view(rot_rgb, rot_depth, rotated, novel_depth, novel)
    assert valid.float().mean() > 0.4
    assert (warped[valid] - novel_rgb[valid]).abs().max() < 2e-3


def test_occluded_pixels_and_pixels_without_geometry_are_rejected():
    novel, train = camera(), camera((0.5, 0.0, 0.0))
    _, novel_depth = ray_cast(novel)
    train_rgb, train_depth = ray_cast(train)
    _, clear = warp_training_view(train_rgb, train_depth, train, novel_depth, novel)
    occluded_depth = train_depth.clone()
    occluded_depth[10:25, 12:30] = 2.0  # something in front of the plane, seen only by the training camera
    _, valid = warp_training_view(train_rgb, occluded_depth, train, novel_depth, novel)
    uv, _ = agreement.project(agreement.unproject(novel_depth, novel), train)
    behind = (uv[..., 0] > 12) & (uv[..., 0] < 30) & (uv[..., 1] > 10) & (uv[..., 1] < 25)
    assert behind.sum() > 100 and clear[behind].all()
    assert not valid[behind].any()
    far_from_it = (uv[..., 0] < 10) | (uv[..., 0] > 32) | (uv[..., 1] < 8) | (uv[..., 1] > 27)
    assert torch.equal(valid[far_from_it], clear[far_from_it])
    no_geometry = novel_depth.clone()
    no_geometry[:, :20] = 0.0
    _, valid = warp_training_view(train_rgb, train_depth, train, no_geometry, novel)
    assert not valid[:, :20].any() and valid[:, 20:].any()
    mask = torch.ones(H, W)
    mask[:, 20:] = 0.0  # the photo is known on its left half only (masked protocol)
    _, valid = warp_training_view(train_rgb, train_depth, train, novel_depth, novel, train_mask=mask)
    assert valid.any()
    assert not (valid & (uv[..., 0] > 19.5001)).any()  # a bilinear sample there touches an unknown pixel


def frames_check(repaired: list[torch.Tensor], render: torch.Tensor, depth: torch.Tensor):
    novel, left, right = camera(), camera((0.5, 0.0, 0.0)), camera((-0.5, 0.1, 0.0))
    photos = {0: ray_cast(left), 1: ray_cast(right)}
    calls = []

    def train_view(i):
        calls.append(i)
        return photos[i][0], photos[i][1], None

    n = len(repaired)
    warps = agreement.warp_neighbours(depth.expand(n, H, W), [novel] * n, [left, right], train_view)
    verdicts = check_frames(torch.stack(repaired), render.expand(n, H, W, 3), warps)
    assert sorted(calls) == [0, 1]  # each training view rendered once per round
    return verdicts


def test_a_repair_that_moves_away_from_the_photos_is_skipped_and_one_closer_is_kept():
    truth, depth = ray_cast(camera())
    render = (truth + 0.06).clamp(0, 1)  # the reconstruction's render, off by a colour shift
    closer = (truth + 0.01).clamp(0, 1)
    noisy = (render + 0.1 * torch.randn(H, W, 3, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    better, worse, unchanged = frames_check([closer, noisy, render], render, depth)
    assert better.weight == 1.0 and better.rule == agreement.RULE_AGREES and better.gain_db > 3
    assert worse.weight == 0.0 and worse.rule == agreement.RULE_DISAGREES and worse.gain_db < -3
    assert unchanged.weight == 1.0 and unchanged.gain_db == pytest.approx(0.0)  # the identity repair is kept
    assert better.valid_fraction > 0.5 and better.views == [0, 1]
    json.dumps([v.as_dict() for v in (better, worse)])  # plain types: they go into the manifest


def test_frames_the_photos_do_not_see_are_judged_by_the_size_of_the_change():
    truth, depth = ray_cast(camera())
    render = (truth + 0.06).clamp(0, 1)
    small = (render - 0.01).clamp(0, 1)
    large = (render + 0.2).clamp(0, 1)
    closer = (truth + 0.01).clamp(0, 1)  # the change a confirmed frame made: ~0.05 per channel
    hidden = torch.zeros_like(depth)  # no geometry in the render: nothing to warp
    one_view = CheckSettings(num_views=1)
    train, train_view = [camera((0.5, 0.0, 0.0))], lambda i: (*ray_cast(camera((0.5, 0.0, 0.0))), None)
    warps = agreement.warp_neighbours(torch.stack([depth, hidden, hidden]), [camera()] * 3, train, train_view,
                                      one_view)
    verdicts = check_frames(torch.stack([closer, small, large]), render.expand(3, H, W, 3), warps, one_view)
    assert [v.rule for v in verdicts] == [agreement.RULE_AGREES, agreement.RULE_SMALL_CHANGE,
                                          agreement.RULE_LARGE_CHANGE]
    assert [v.weight for v in verdicts] == [1.0, 1.0, 0.0]
    assert verdicts[1].repaired_psnr is None and verdicts[1].valid_fraction == 0.0
    # No frame of the round confirmed by the photos: nothing unjudged is trusted either.
    noisy = (render + 0.2).clamp(0, 1)
    warps = agreement.warp_neighbours(torch.stack([depth, hidden]), [camera()] * 2, train, train_view, one_view)
    verdicts = check_frames(torch.stack([noisy, small]), render.expand(2, H, W, 3), warps, one_view)
    assert [v.weight for v in verdicts] == [0.0, 0.0]


def make_views(n: int, weights=None) -> RepairedViews:
    c2w = torch.eye(4)[:3].expand(n, 3, 4).clone()
    c2w[:, 2, 3] = torch.arange(n, dtype=torch.float32)
    return RepairedViews(camera_to_worlds=c2w, fx=torch.full((n,), 10.0), fy=torch.full((n,), 10.0),
                         cx=torch.full((n,), 16.0), cy=torch.full((n,), 16.0),
                         rgb=torch.full((n, 32, 32, 3), 7, dtype=torch.uint8), depth=torch.rand(n, 32, 32) + 1.0,
                         round_index=1, step=200, input_rgb=torch.full((n, 32, 32, 3), 9, dtype=torch.uint8),
                         weights=weights)


def test_weights_and_checks_round_trip_through_the_round_folder(tmp_path):
    views = make_views(3, weights=torch.tensor([1.0, 0.0, 0.5]))
    views.checks = [{"weight": w, "rule": r} for w, r in ((1.0, "agrees"), (0.0, "disagrees"), (0.5, "agrees"))]
    views.save(tmp_path / "round", scene_to_file_depth=100.0)
    back = RepairedViews.load(tmp_path / "round")
    assert torch.equal(back.frame_weights, torch.tensor([1.0, 0.0, 0.5]))
    assert back.checks == views.checks
    # A folder written before weights existed loads with every frame at full weight.
    make_views(2).save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / MANIFEST_NAME).read_text())
    assert all("weight" not in f and "check" not in f for f in manifest["frames"])
    old = RepairedViews.load(tmp_path / "old")
    assert old.weights is None and old.checks is None and torch.equal(old.frame_weights, torch.ones(2))
    manifest["frames"][0]["weight"], manifest["frames"][1]["weight"] = -1.0, 1.0
    (tmp_path / "old" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="weights"):
        RepairedViews.load(tmp_path / "old")


def test_the_datamanager_never_draws_skipped_frames_and_passes_the_weight(tiny_scene, tmp_path):
    from genfusion_ns.fusion.datamanager import REPAIRED_WEIGHT_KEY
    from genfusion_ns.method_configs import fusion_datamanager

    config = fusion_datamanager()
    config.data = tiny_scene
    dm = config.setup(device="cpu")
    views = make_views(3, weights=torch.tensor([1.0, 0.0, 0.5]))
    images, depths = views.save(tmp_path / "r0", dm.scene_to_file_depth)
    back = RepairedViews.load(tmp_path / "r0")  # what a resume / ns-viewer appends
    assert dm.add_repaired_views(back, images, depths) == [3, 4, 5]
    assert dm.repaired_indices == [3, 4, 5] and dm.trained_repaired_indices == [3, 5]
    drawn = [dm.next_repaired(i) for i in range(8)]
    assert {int(c.metadata["cam_idx"]) for c, _ in drawn} == {3, 5}
    assert {int(c.metadata["cam_idx"]): b[REPAIRED_WEIGHT_KEY] for c, b in drawn} == {3: 1.0, 5: 0.5}
    dm.remove_repaired_views()
    none_kept = make_views(2, weights=torch.zeros(2))
    images, depths = none_kept.save(tmp_path / "r1", dm.scene_to_file_depth)
    dm.add_repaired_views(none_kept, images, depths)
    assert len(dm.train_dataset) == 5 and dm.next_repaired(0) is None  # in the dataset (viewer), never trained


def test_the_repaired_loss_is_scaled_by_the_frame_weight_and_skips_when_none_is_left():
    from genfusion_ns.fusion.datamanager import REPAIRED_DEPTH_KEY, REPAIRED_WEIGHT_KEY
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig
    from genfusion_ns.fusion.schedule import resolve_schedule
    from genfusion_ns.model.genfusion_model import LOSS_WEIGHT_KEY

    config = GenFusionPipelineConfig(fusion_start=10, fusion_every=10, fusion_until=110)
    outputs = {"depth": torch.ones(4, 4, 1), "accumulation": torch.ones(4, 4, 1)}

    def model(camera):
        return outputs

    model.get_loss_dict = lambda out, batch: {"main_loss": torch.tensor(float(batch[LOSS_WEIGHT_KEY]))}
    queue = []

    def next_repaired(step):
        return queue.pop(0) if queue else None

    fake = SimpleNamespace(config=config, schedule=resolve_schedule(110, 0.1, 0.1, 1.0, 10, 10, 110), model=model,
                           device="cpu", datamanager=SimpleNamespace(repaired_indices=[3], next_repaired=next_repaired))
    queue.append((SimpleNamespace(metadata={}), {REPAIRED_DEPTH_KEY: torch.ones(4, 4, 1), REPAIRED_WEIGHT_KEY: 0.25}))
    losses = GenFusionPipeline._repaired_losses(fake, 60)  # the sine weight peaks (1.0) half-way
    assert float(losses["repaired_main_loss"]) == pytest.approx(0.25)
    assert GenFusionPipeline._repaired_losses(fake, 61) == {}  # every frame skipped: no repaired loss, no error


def pipeline_double(config, train: Pinhole) -> SimpleNamespace:
    """What ``GenFusionPipeline._check_repaired_frames`` uses of the pipeline: its config, the check records, the
    judging step and the training evidence (the plane seen from ``train``)."""
    from genfusion_ns.fusion.pipeline import GenFusionPipeline

    fake = SimpleNamespace(config=config, frame_checks=[], _training_evidence=lambda cams, i: (*ray_cast(train), None))
    fake._judge_frames = lambda views, verdicts: GenFusionPipeline._judge_frames(fake, views, verdicts)
    return fake


def test_the_render_is_kept_only_where_a_training_photo_sees_and_confirms_it():
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig

    novel, train = camera(), camera((0.5, 0.0, 0.0))
    truth, depth = ray_cast(novel)
    render = (truth + 0.06).clamp(0, 1)  # close to the photos: confirmed
    render[5:15, 25:35] = (truth[5:15, 25:35] + 0.3).clamp(0, 1)  # a wrong patch the photo contradicts
    repaired = (truth - 0.05).clamp(0, 1)
    _, seen = warp_training_view(*ray_cast(train), train, depth, novel)
    assert not seen.all()  # a band of the frame the training camera does not see
    warps = agreement.warp_neighbours(depth[None], [novel], [train], lambda i: (*ray_cast(train), None),
                                      CheckSettings(num_views=1))
    confirmed = agreement.confirmed_pixels(render[None], warps, tolerance=0.1)[0]
    assert confirmed.sum() > 0.5 * H * W
    assert not confirmed[~seen].any() and not confirmed[5:15, 25:35].any()
    assert confirmed[seen].float().mean() > 0.9

    to_bytes = lambda image: (image * 255).round().to(torch.uint8)  # noqa: E731
    views = RepairedViews(camera_to_worlds=novel.camera_to_world[None].clone(), fx=torch.tensor([F]),
                          fy=torch.tensor([F]), cx=torch.tensor([W / 2]), cy=torch.tensor([H / 2]),
                          rgb=to_bytes(repaired)[None], depth=1.5 * depth[None], round_index=2, step=300,
                          input_rgb=to_bytes(render)[None], input_depth=depth[None].clone())
    real = SimpleNamespace(camera_to_worlds=train.camera_to_world[None], fx=torch.tensor([[F]]),
                           fy=torch.tensor([[F]]), cx=torch.tensor([[W / 2]]), cy=torch.tensor([[H / 2]]))
    config = GenFusionPipelineConfig(repaired_frame_check="off", keep_confirmed_render=True,
                                     repaired_frame_check_views=1)
    fake = pipeline_double(config, train)
    GenFusionPipeline._check_repaired_frames(fake, views, real)
    assert fake.frame_checks == [] and views.checks is None  # no frame check: only the pixels changed
    kept = views.rgb[0] == to_bytes(render)
    assert kept.all(-1)[confirmed].all() and torch.equal(views.depth[0][confirmed], depth[confirmed])
    assert torch.equal(views.rgb[0][~confirmed], to_bytes(repaired)[~confirmed])
    assert torch.equal(views.depth[0][~confirmed], 1.5 * depth[~confirmed])
    # With a check, it judges the model's own output and the manifest records the share of the render kept.
    views = RepairedViews(camera_to_worlds=views.camera_to_worlds, fx=views.fx, fy=views.fy, cx=views.cx,
                          cy=views.cy, rgb=to_bytes(repaired)[None], depth=1.5 * depth[None], round_index=2, step=300,
                          input_rgb=to_bytes(render)[None], input_depth=depth[None].clone())
    fake = pipeline_double(GenFusionPipelineConfig(keep_confirmed_render=True, repaired_frame_check_views=1), train)
    GenFusionPipeline._check_repaired_frames(fake, views, real)
    assert views.checks[0]["render_kept_fraction"] == pytest.approx(float(confirmed.float().mean()), abs=1e-4)
    assert views.checks[0]["repaired_psnr"] > views.checks[0]["render_psnr"]  # judged before the render was kept


def test_unobserved_mode_trains_repaired_frames_only_where_no_training_photo_sees(tiny_scene, tmp_path):
    from genfusion_ns.fusion.datamanager import REPAIRED_DEPTH_KEY
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig
    from genfusion_ns.fusion.schedule import resolve_schedule
    from genfusion_ns.method_configs import fusion_datamanager
    from genfusion_ns.model.genfusion_model import LOSS_WEIGHT_KEY

    novel, train = camera(), camera((0.5, 0.0, 0.0))
    truth, depth = ray_cast(novel)
    _, seen = warp_training_view(*ray_cast(train), train, depth, novel)
    assert 0.3 < seen.float().mean() < 1.0
    to_bytes = lambda image: (image * 255).round().to(torch.uint8)  # noqa: E731
    views = RepairedViews(camera_to_worlds=novel.camera_to_world[None].clone(), fx=torch.tensor([F]),
                          fy=torch.tensor([F]), cx=torch.tensor([W / 2]), cy=torch.tensor([H / 2]),
                          rgb=to_bytes(truth)[None], depth=depth[None].clone(), round_index=0, step=100,
                          input_rgb=to_bytes(truth)[None], input_depth=depth[None].clone())
    real = SimpleNamespace(camera_to_worlds=train.camera_to_world[None], fx=torch.tensor([[F]]),
                           fy=torch.tensor([[F]]), cx=torch.tensor([[W / 2]]), cy=torch.tensor([[H / 2]]))
    fake = pipeline_double(GenFusionPipelineConfig(repaired_frame_check="off", repaired_pixels="unobserved",
                                                   repaired_frame_check_views=1), train)
    GenFusionPipeline._check_repaired_frames(fake, views, real)
    assert torch.equal(views.loss_masks[0], ~seen)  # the photo speaks where it sees; the repair only elsewhere
    assert torch.equal(views.rgb[0], to_bytes(truth))  # colours untouched: the mask only selects the pixels
    # The mask survives the round folder and reaches nerfstudio's mask key in the training batch.
    config = fusion_datamanager()
    config.data = tiny_scene
    dm = config.setup(device="cpu")
    images, depths = views.save(tmp_path / "r0", dm.scene_to_file_depth)
    back = RepairedViews.load(tmp_path / "r0")
    assert torch.equal(back.loss_masks, views.loss_masks)
    dm.add_repaired_views(back, images, depths)
    _, batch = dm.next_repaired(0)
    assert torch.equal(batch["mask"][..., 0], ~seen)
    # The repaired depth term ignores the masked-out pixels: a wrong depth there costs nothing.
    outputs = {"depth": depth[..., None].clone(), "accumulation": torch.ones(H, W, 1)}
    model = lambda cam: outputs  # noqa: E731
    model.get_loss_dict = lambda out, b: {"main_loss": torch.tensor(float(b[LOSS_WEIGHT_KEY]))}
    queue = []
    fake = SimpleNamespace(config=GenFusionPipelineConfig(fusion_start=10, fusion_every=10, fusion_until=110),
                           schedule=resolve_schedule(110, 0.1, 0.1, 1.0, 10, 10, 110), model=model, device="cpu",
                           datamanager=SimpleNamespace(repaired_indices=[3], next_repaired=lambda step: queue.pop(0)))
    wrong = depth * (torch.rand(H, W) * 3 + 0.1)
    target = torch.where(seen, wrong, depth)[..., None]  # wrong only where the photo sees
    queue.append((SimpleNamespace(metadata={}), {REPAIRED_DEPTH_KEY: target, "mask": (~seen)[..., None]}))
    assert float(GenFusionPipeline._repaired_losses(fake, 60)["repaired_depth_loss"]) < 1e-6
    queue.append((SimpleNamespace(metadata={}), {REPAIRED_DEPTH_KEY: target}))
    assert float(GenFusionPipeline._repaired_losses(fake, 60)["repaired_depth_loss"]) > 1e-3


def test_unobserved_pixels_come_from_every_training_photo_while_the_check_keeps_its_nearest():
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig

    novel, near, far = camera(), camera((0.5, 0.0, 0.0)), camera((-1.5, 0.0, 0.0))
    truth, depth = ray_cast(novel)
    _, seen_near = warp_training_view(*ray_cast(near), near, depth, novel)
    _, seen_far = warp_training_view(*ray_cast(far), far, depth, novel)
    assert (seen_far & ~seen_near).any()  # the far photo sees a band the nearest one does not
    to_bytes = lambda image: (image * 255).round().to(torch.uint8)  # noqa: E731
    trains = [near, far]
    real = SimpleNamespace(camera_to_worlds=torch.stack([c.camera_to_world for c in trains]),
                           fx=torch.full((2, 1), F), fy=torch.full((2, 1), F), cx=torch.full((2, 1), W / 2),
                           cy=torch.full((2, 1), H / 2))

    def masks(**options):
        views = RepairedViews(camera_to_worlds=novel.camera_to_world[None].clone(), fx=torch.tensor([F]),
                              fy=torch.tensor([F]), cx=torch.tensor([W / 2]), cy=torch.tensor([H / 2]),
                              rgb=to_bytes(truth)[None], depth=depth[None].clone(), round_index=0, step=100,
                              input_rgb=to_bytes(truth)[None], input_depth=depth[None].clone())
        config = GenFusionPipelineConfig(repaired_pixels="unobserved", repaired_frame_check_views=1, **options)
        fake = SimpleNamespace(config=config, frame_checks=[],
                               _training_evidence=lambda cams, i: (*ray_cast(trains[i]), None))
        fake._judge_frames = lambda views, verdicts: GenFusionPipeline._judge_frames(fake, views, verdicts)
        GenFusionPipeline._check_repaired_frames(fake, views, real)
        assert views.checks[0]["views"] == [0]  # the check still judges against the nearest photo only
        return views.loss_masks[0]

    assert torch.equal(masks(), ~(seen_near | seen_far))  # default: no training photo sees these pixels
    assert torch.equal(masks(unobserved_views=1), ~seen_near)  # only the nearest photo decides


def test_the_pipeline_weighs_falls_back_measures_or_ignores_by_mode():
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig

    novel, train = camera(), camera((0.5, 0.0, 0.0))
    truth, depth = ray_cast(novel)
    render = ((truth + 0.06).clamp(0, 1) * 255).round().to(torch.uint8)
    closer = ((truth + 0.01).clamp(0, 1) * 255).round().to(torch.uint8)
    noisy = (render.float() + 40 * torch.randn(H, W, 3, generator=torch.Generator().manual_seed(1))).clamp(0, 255)
    real = SimpleNamespace(camera_to_worlds=train.camera_to_world[None], fx=torch.tensor([[F]]),
                           fy=torch.tensor([[F]]), cx=torch.tensor([[W / 2]]), cy=torch.tensor([[H / 2]]))

    def judged(mode: str) -> tuple[RepairedViews, list]:
        views = RepairedViews(camera_to_worlds=novel.camera_to_world[None].expand(2, 3, 4).clone(),
                              fx=torch.full((2,), F), fy=torch.full((2,), F), cx=torch.full((2,), W / 2),
                              cy=torch.full((2,), H / 2), rgb=torch.stack([closer, noisy.to(torch.uint8)]),
                              depth=1.5 * depth.expand(2, H, W), round_index=4, step=500,
                              input_rgb=render.expand(2, H, W, 3).clone(), input_depth=depth.expand(2, H, W).clone())
        fake = pipeline_double(GenFusionPipelineConfig(repaired_frame_check=mode), train)
        GenFusionPipeline._check_repaired_frames(fake, views, real)
        return views, fake.frame_checks

    views, records = judged("training-views")
    assert views.weights.tolist() == [1.0, 0.0] and [c["rule"] for c in views.checks] == ["agrees", "disagrees"]
    assert records == [{"round": 4, "step": 500, "mode": "training-views", "frames": 2, "kept": 1, "mean_weight": 0.5,
                        "by_rule": {"agrees": 1, "disagrees": 1}, "mean_gain_db": records[0]["mean_gain_db"]}]
    views, records = judged("weigh")  # two frames: the median lies between them, the worse one gets the floor
    assert views.weights.tolist() == [1.0, 0.25] and [c["weight"] for c in views.checks] == [1.0, 0.25]
    assert [c["rule"] for c in views.checks] == [agreement.RULE_AT_OR_ABOVE_MEDIAN, agreement.RULE_BELOW_MEDIAN]
    assert records[0]["mode"] == "weigh" and records[0]["kept"] == 2 and records[0]["mean_weight"] == 0.625
    views, records = judged("measure")
    assert views.weights is None and [c["weight"] for c in views.checks] == [1.0, 0.0] and records[0]["kept"] == 1
    assert torch.equal(views.rgb[1], noisy.to(torch.uint8))  # measure trains on every repair as it came
    views, records = judged("render-fallback")  # the frame that moved away trains on its render, colour and depth
    assert views.weights is None and records[0]["mode"] == "render-fallback" and records[0]["kept"] == 1
    assert torch.equal(views.rgb[0], closer) and torch.equal(views.rgb[1], render)
    assert torch.equal(views.depth[0], 1.5 * depth) and torch.equal(views.depth[1], depth)
    assert [c["trained_on"] for c in views.checks] == ["repair", "render"]
    views, records = judged("off")
    assert views.weights is None and views.checks is None and records == []


def test_weigh_mode_follows_the_ranks_within_the_round_down_to_the_floor():
    # Seven judged frames in shuffled order: median -3; the three below it get 0.25 + 0.75 * r / 3 by rank r.
    differences = [-5.0, -0.5, -3.0, -6.0, -1.0, -4.0, -2.0]
    expected = [0.5, 1.0, 1.0, 0.25, 1.0, 0.75, 1.0]
    assert agreement.rank_weights(differences, 0.25) == pytest.approx(expected)
    # Only the ranks count, not the values: the same order at another level and spread gives the same weights.
    assert agreement.rank_weights([10 + 0.1 * d for d in differences], 0.25) == pytest.approx(expected)
    weights = agreement.rank_weights([-0.3, -7.0, -2.2, -2.2, -9.5, -1.0], 0.4)  # median -2.2, ties weigh alike
    assert weights == pytest.approx([1.0, 0.7, 1.0, 1.0, 0.4, 1.0]) and min(weights) == pytest.approx(0.4)
    assert agreement.rank_weights([-1.7] * 5, 0.25) == [1.0] * 5  # identical differences: nothing to down-weigh
    assert agreement.rank_weights([-4.0], 0.25) == [1.0] and agreement.rank_weights([], 0.25) == []

    # Through decide_by_rank: figures (repaired_psnr, render_psnr, valid_fraction, change_psnr); the fourth and fifth
    # frames are not judged (too few pixels seen): a change no larger than the confirmed frames' keeps 1, a larger
    # one gets the floor, never 0.
    settings = CheckSettings(by_rank=True, rank_floor=0.25)
    figures = [(20.0, 21.0, 0.5, 30.0), (18.0, 21.0, 0.5, 25.0), (20.5, 21.0, 0.5, 28.0),
               (None, None, 0.0, 29.0), (None, None, 0.05, 20.0)]
    decided = agreement.decide_by_rank(figures, settings)
    assert [w for w, _ in decided] == pytest.approx([1.0, 0.25, 1.0, 1.0, 0.25])
    assert [r for _, r in decided] == [agreement.RULE_AT_OR_ABOVE_MEDIAN, agreement.RULE_BELOW_MEDIAN,
                                       agreement.RULE_AT_OR_ABOVE_MEDIAN, agreement.RULE_SMALL_CHANGE,
                                       agreement.RULE_LARGE_CHANGE]
    same = [(19.0, 21.0, 0.5, 25.0 + i) for i in range(4)]
    assert [w for w, _ in agreement.decide_by_rank(same, settings)] == [1.0] * 4
    assert agreement.decide_by_rank([(None, None, 0.0, 20.0)] * 2, settings) == [
        (1.0, agreement.RULE_NOTHING_TO_RANK)] * 2
    # The threshold rule is untouched: the same round under training-views skips the two frames below -2 dB.
    assert [w for w, _ in agreement.decide(figures[:3], CheckSettings())] == [1.0, 0.0, 1.0]


def test_a_fractional_frame_weight_scales_every_repaired_loss_term_including_depth():
    from genfusion_ns.fusion.datamanager import REPAIRED_DEPTH_KEY, REPAIRED_WEIGHT_KEY
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig
    from genfusion_ns.fusion.schedule import resolve_schedule
    from genfusion_ns.model.genfusion_model import LOSS_WEIGHT_KEY

    config = GenFusionPipelineConfig(fusion_start=10, fusion_every=10, fusion_until=110)
    ramp = torch.linspace(1.0, 2.0, 16).reshape(4, 4, 1)
    outputs = {"depth": ramp, "accumulation": torch.ones(4, 4, 1)}
    model = lambda camera: outputs
    model.get_loss_dict = lambda out, batch: {"main_loss": torch.tensor(float(batch[LOSS_WEIGHT_KEY]))}
    queue = []
    fake = SimpleNamespace(config=config, schedule=resolve_schedule(110, 0.1, 0.1, 1.0, 10, 10, 110), model=model,
                           device="cpu", datamanager=SimpleNamespace(repaired_indices=[3],
                                                                     next_repaired=lambda step: queue.pop(0)))
    target = (ramp.flip(0) ** 2).contiguous()  # not an affine map of the render: a depth loss above 0

    def losses_at(frame_weight: float):
        queue.append((SimpleNamespace(metadata={}), {REPAIRED_DEPTH_KEY: target, REPAIRED_WEIGHT_KEY: frame_weight}))
        return GenFusionPipeline._repaired_losses(fake, 60)

    full, quarter = losses_at(1.0), losses_at(0.25)
    assert float(full["repaired_depth_loss"]) > 1e-4
    assert float(quarter["repaired_main_loss"]) == pytest.approx(0.25)
    assert float(quarter["repaired_depth_loss"]) == pytest.approx(0.25 * float(full["repaired_depth_loss"]))


def test_covered_weight_keeps_full_weight_where_the_render_was_empty(tiny_scene, tmp_path):
    from genfusion_ns.fusion.pipeline import GenFusionPipeline, GenFusionPipelineConfig
    from genfusion_ns.method_configs import fusion_datamanager

    novel, train = camera(), camera((0.5, 0.0, 0.0))
    truth, depth = ray_cast(novel)
    render_depth = depth.clone()
    render_depth[:, : W // 3] = 0.0  # the render showed nothing in the left third
    to_bytes = lambda image: (image * 255).round().to(torch.uint8)  # noqa: E731
    views = RepairedViews(camera_to_worlds=novel.camera_to_world[None].clone(), fx=torch.tensor([F]),
                          fy=torch.tensor([F]), cx=torch.tensor([W / 2]), cy=torch.tensor([H / 2]),
                          rgb=to_bytes(truth)[None], depth=depth[None].clone(), round_index=0, step=100,
                          input_rgb=to_bytes(truth)[None], input_depth=render_depth[None])
    real = SimpleNamespace(camera_to_worlds=train.camera_to_world[None], fx=torch.tensor([[F]]),
                           fy=torch.tensor([[F]]), cx=torch.tensor([[W / 2]]), cy=torch.tensor([[H / 2]]))
    fake = pipeline_double(GenFusionPipelineConfig(repaired_frame_check="off", repaired_covered_weight=0.25), train)
    GenFusionPipeline._check_repaired_frames(fake, views, real)
    weights = views.loss_masks[0]
    assert torch.all(weights[:, : W // 3] == 1.0) and torch.all(weights[:, W // 3 :] == 0.25)
    config = fusion_datamanager()
    config.data = tiny_scene
    dm = config.setup(device="cpu")
    images, depths = views.save(tmp_path / "r0", dm.scene_to_file_depth)
    back = RepairedViews.load(tmp_path / "r0")
    assert torch.allclose(back.loss_masks, views.loss_masks, atol=1 / 255)  # fractional weights survive the folder
    dm.add_repaired_views(back, images, depths)
    _, batch = dm.next_repaired(0)
    assert torch.allclose(batch["mask"][..., 0], weights, atol=1 / 255)
    off = pipeline_double(GenFusionPipelineConfig(repaired_frame_check="off"), train)
    views.loss_masks = None
    GenFusionPipeline._check_repaired_frames(off, views, real)
    assert views.loss_masks is None  # weight 1 (the default): every pixel alike, no mask at all
