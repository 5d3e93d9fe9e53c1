"""Per-frame trust in a repaired view, judged from the training data only (never from held-out views).

Why: the video model does not always beat the render it was given (late rounds, when the render is already good, it
returns frames that are worse than its input), and a repaired frame that is worse than the render pulls the scene
down when it becomes training data. The only real evidence at a novel camera is the training photos, so each
repaired frame is compared with the nearest training views *warped into the frame*:

1. unproject the frame's pixels with the depth the model rendered there (the render's own geometry, which the
   repaired frame is supposed to keep), project them into a training camera and sample its photo bilinearly;
2. keep only pixels that the training camera really sees: in front of it, inside its image (and inside its mask
   when the dataset has one), and not occluded, i.e. the model's own depth rendered at that training camera agrees
   with the projected depth (relative tolerance);
3. on those pixels, compare PSNR(repaired, warped photo) with PSNR(render, warped photo). A frame is kept when the
   difference is at least ``min_gain_db`` and skipped (weight 0) otherwise. The tolerance is below 0 on purpose:
   warped through the model's own depth, the photos agree with the render almost by construction (the model was
   fitted to them), so even a repair that moves the frame towards the truth usually scores below the render there;
   what separates the frames is how far below. On the tuning scene (room seed 310, shipped model) the difference
   ran from -0.7 to -5.3 dB, it correlated with the true gain (0.65 in the second and third rounds, not in the
   first), and -2 dB kept only frames that were, on average, better than their renders in every round.

Frames where too few pixels pass (views the training cameras do not see: exactly where a generative prior is
needed) fall back to the size of the change: such a frame is kept if the video model changed it no more than it
changed the frames the photos confirmed in the same round (PSNR(repaired, render) at least the lowest one among
the confirmed frames), and skipped otherwise (also when the round confirmed none).

Soft mode (``weigh``): instead of an absolute threshold, the judged frames of a round are ranked by the difference
and weighed by rank, which does not depend on the scene's level of agreement (the threshold above was tuned on one
scene, and skipping frames that were merely as good as their renders cost 1.3 dB on an unseen room). Frames at or
above the round's median difference keep weight 1; below the median, with ``k`` frames strictly below it and ``r``
the number of frames whose difference is strictly lower than the frame's own (0 for the worst), the weight is
``floor + (1 - floor) * r / k``: ``floor`` (``rank_floor``, 0.25) for the worst frame, rising linearly in rank
towards 1 at the median, equal differences equal weights, so a round of identical differences keeps weight 1
everywhere. Unjudged frames (too few pixels seen) keep weight 1 when the change is no larger than the largest
change among the round's at-or-above-median frames and get ``floor`` otherwise; a round with no judged frame keeps
weight 1 everywhere (nothing to rank against). No frame gets weight 0, so every frame is still drawn.

Cameras are nerfstudio camera-to-world matrices (OpenGL axes); the one OpenGL <-> OpenCV flip of
``genfusion_ns.axes`` turns them into the OpenCV pinhole model used for (un)projection. Pixel centres are at
``(j + 0.5, i + 0.5)``, as in nerfstudio's ray generation and the rasterizer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple, get_args

import torch
import torch.nn.functional as F

from genfusion_ns.axes import flip_camera_axes
from genfusion_ns.fusion.trajectories import camera_centers, forward_axes

CheckMode = Literal["training-views", "render-fallback", "weigh", "measure", "off"]
CHECK_MODES: Tuple[str, ...] = get_args(CheckMode)
"""``--pipeline.repaired-frame-check``: judge and skip below the threshold, judge and train on the render instead
below it, judge and down-weight by rank within the round, judge and record only (every frame keeps weight 1, the
record is the ``training-views`` decision), or nothing."""

RULE_AGREES = "agrees"
RULE_DISAGREES = "disagrees"
RULE_SMALL_CHANGE = "small-change"
RULE_LARGE_CHANGE = "large-change"
RULE_AT_OR_ABOVE_MEDIAN = "at-or-above-median"
RULE_BELOW_MEDIAN = "below-median"
RULE_NOTHING_TO_RANK = "nothing-to-rank"


@dataclass(frozen=True)
class Pinhole:
    """One pinhole camera: nerfstudio camera-to-world ``[3|4, 4]`` (OpenGL) and intrinsics in pixels."""

    camera_to_world: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the check (``--pipeline.repaired-frame-*``)."""

    min_gain_db: float = -2.0
    """A judged frame is kept when PSNR(repaired, photos) - PSNR(render, photos) is at least this. Below 0 because
    the render reproduces the photos by construction (the model was fitted to them, and the warp uses its own
    depth), while the video model pays a reproduction cost (VAE, colour drift) even where it is right: -2 dB was
    measured for the shipped model on a tuning scene (room seed 310, not a benchmark scene)."""
    min_valid_fraction: float = 0.1
    """Fewer of the frame's pixels seen by the training views than this: judged by the size of the change."""
    num_views: int = 2
    """Nearest training views warped into each frame."""
    depth_tolerance: float = 0.05
    """Relative depth difference above which a training camera is taken to see another surface (occlusion)."""
    by_rank: bool = False
    """Mode ``weigh``: weigh the frames by their rank within the round (:func:`decide_by_rank`) instead of skipping
    those below ``min_gain_db`` (:func:`decide`)."""
    rank_floor: float = 0.25
    """Mode ``weigh``: the weight of the round's worst judged frame (in (0, 1])."""


@dataclass
class FrameVerdict:
    """What the check decided for one frame, with the figures it decided on (plain types: written to manifests)."""

    weight: float
    rule: str
    valid_fraction: float
    repaired_psnr: Optional[float]
    """PSNR of the repaired frame against the warped photos on the pixels they cover (None: too few pixels)."""
    render_psnr: Optional[float]
    """The same for the render the video model was given."""
    change_psnr: float
    """PSNR(repaired, render): the smaller, the bigger the change the video model made."""
    views: List[int]

    @property
    def gain_db(self) -> Optional[float]:
        if self.repaired_psnr is None or self.render_psnr is None:
            return None
        return self.repaired_psnr - self.render_psnr

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- geometry
def _opencv_pose(camera: Pinhole) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotation and centre of the camera with OpenCV axes (x right, y down, z forward)."""
    c2w = flip_camera_axes(camera.camera_to_world[:3, :4].double())
    return c2w[:, :3], c2w[:, 3]


def pixel_centres(height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``u`` (column) and ``v`` (row) coordinates of pixel centres, ``[H, W]`` each."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    return u, v


def unproject(depth: torch.Tensor, camera: Pinhole) -> torch.Tensor:
    """World points ``[H, W, 3]`` of every pixel at its z-depth ``depth [H, W]`` (the renderer's depth is along the
    optical axis, not along the ray)."""
    u, v = pixel_centres(*depth.shape)
    z = depth.double()
    local = torch.stack([(u - camera.cx) / camera.fx * z, (v - camera.cy) / camera.fy * z, z], dim=-1)
    rotation, centre = _opencv_pose(camera)
    return local @ rotation.T + centre


def project(points: torch.Tensor, camera: Pinhole) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``[..., 2]`` (u, v) and z-depth ``[...]`` of world points ``[..., 3]`` in ``camera``."""
    rotation, centre = _opencv_pose(camera)
    local = (points.double() - centre) @ rotation  # R^T (p - c), row vectors
    z = local[..., 2]
    safe = torch.where(z.abs() > 1e-9, z, torch.full_like(z, 1e-9))
    uv = torch.stack([camera.fx * local[..., 0] / safe + camera.cx, camera.fy * local[..., 1] / safe + camera.cy],
                     dim=-1)
    return uv, z


def sample(image: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``image [h, w, C]`` at pixel coordinates ``uv [H, W, 2]`` (pixel centres at +0.5) -> ``[H, W, C]``."""
    h, w = image.shape[:2]
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)[None].float()
    out = F.grid_sample(image.permute(2, 0, 1)[None].float(), grid, mode=mode, padding_mode="border",
                        align_corners=False)
    return out[0].permute(1, 2, 0)


def warp_training_view(
    train_rgb: torch.Tensor,
    train_depth: torch.Tensor,
    train_camera: Pinhole,
    novel_depth: torch.Tensor,
    novel_camera: Pinhole,
    train_mask: Optional[torch.Tensor] = None,
    depth_tolerance: float = 0.05,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A training photo seen from a novel camera through the model's geometry: ``(warped [H,W,3], valid [H,W])``.

    ``novel_depth`` is the z-depth rendered at the novel camera (0: no geometry), ``train_depth`` the model's
    z-depth rendered at the training camera (0: no geometry), ``train_mask`` (optional, ``[h, w]`` or ``[h, w, 1]``)
    the photo's known pixels. A pixel is valid when its surface point lies in front of the training camera,
    projects between the outermost pixel centres of the photo (so the bilinear sample uses real pixels only),
    inside the mask, and the training camera's own depth there agrees with the projected depth within
    ``depth_tolerance`` (relative), both at the nearest pixel and bilinearly (a bilinear depth across an edge falls
    between the two surfaces and fails): otherwise another surface hides it from the training camera.
    """
    h, w = train_rgb.shape[:2]
    uv, z = project(unproject(novel_depth, novel_camera), train_camera)
    inside = ((novel_depth > 0) & (z > 1e-6) & (uv[..., 0] >= 0.5) & (uv[..., 0] <= w - 0.5)
              & (uv[..., 1] >= 0.5) & (uv[..., 1] <= h - 0.5))
    depth_image = train_depth.reshape(h, w, 1)
    visible = inside
    for mode in ("nearest", "bilinear"):
        seen = sample(depth_image, uv, mode)[..., 0].double()
        visible = visible & (seen > 0) & ((seen - z).abs() <= depth_tolerance * z.abs())
    if train_mask is not None:
        known = sample(train_mask.reshape(h, w, 1).float(), uv, "bilinear")[..., 0]
        visible = visible & (known >= 1.0 - 1e-6)  # every pixel the bilinear sample touches is known
    warped = sample(train_rgb[..., :3], uv, "bilinear")
    return warped, visible


# ---------------------------------------------------------------------------------------------- judging
def nearest_views(frame_c2w: torch.Tensor, train_c2w: torch.Tensor, k: int) -> List[int]:
    """The ``k`` training cameras nearest to one frame: camera distance plus half the disagreement of the viewing
    directions (the rule that picks a clip's CLIP reference, ``trajectories.nearest_training_view``)."""
    frame = frame_c2w[None, :3, :4].float()
    distance = (camera_centers(train_c2w.float()) - camera_centers(frame)).norm(dim=-1)
    alignment = F.normalize(forward_axes(train_c2w.float()), dim=-1) @ F.normalize(forward_axes(frame), dim=-1)[0]
    order = torch.argsort(distance + 0.5 * (1.0 - alignment))
    return [int(i) for i in order[: max(1, k)]]


def masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR of ``a`` against ``b`` (``[..., 3]`` in [0, 1]) over the pixels where ``mask`` is true."""
    mse = float(((a.double() - b.double()) ** 2)[mask].mean())
    return -10.0 * math.log10(max(mse, 1e-10))


def compare_with_photos(repaired: torch.Tensor, render: torch.Tensor, warped: Sequence[torch.Tensor],
                        valid: Sequence[torch.Tensor]) -> Tuple[Optional[float], Optional[float], float]:
    """PSNR of the repaired frame and of the render against the warped photos, pooled over every (view, pixel) that
    passed; and the fraction of the frame's pixels that at least one view covers."""
    covered = torch.stack(list(valid)).any(0)
    fraction = float(covered.double().mean())
    if not bool(covered.any()):
        return None, None, fraction
    photos = torch.cat([wp[m] for wp, m in zip(warped, valid)])
    repaired_px = torch.cat([repaired[m] for m in valid])
    render_px = torch.cat([render[m] for m in valid])
    everywhere = torch.ones(photos.shape[0], dtype=torch.bool)
    return masked_psnr(repaired_px, photos, everywhere), masked_psnr(render_px, photos, everywhere), fraction


def decide(figures: Sequence[Tuple[Optional[float], Optional[float], float, float]],
           settings: CheckSettings) -> List[Tuple[float, str]]:
    """Weight and rule per frame from ``(repaired_psnr, render_psnr, valid_fraction, change_psnr)``.

    Judged frames: kept when the repair gains at least ``min_gain_db`` against the photos. Unjudged frames: kept
    when the change is no larger than the largest change among this round's confirmed frames.
    """
    judged = [r is not None and p is not None and f >= settings.min_valid_fraction for r, p, f, _ in figures]
    confirmed = [c for (r, p, _, c), j in zip(figures, judged) if j and r - p >= settings.min_gain_db]
    smallest_confirmed = min(confirmed) if confirmed else math.inf
    out = []
    for (repaired_psnr, render_psnr, _, change), is_judged in zip(figures, judged):
        if is_judged:
            ok = repaired_psnr - render_psnr >= settings.min_gain_db
            out.append((1.0, RULE_AGREES) if ok else (0.0, RULE_DISAGREES))
        else:
            ok = change >= smallest_confirmed
            out.append((1.0, RULE_SMALL_CHANGE) if ok else (0.0, RULE_LARGE_CHANGE))
    return out


def rank_weights(differences: Sequence[float], floor: float) -> List[float]:
    """Weights by rank within a round: 1 at or above the median difference; below it ``floor + (1 - floor) * r / k``,
    ``k`` the number of differences strictly below the median and ``r`` the number strictly below this one."""
    if not differences:
        return []
    ordered = sorted(differences)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    below = sum(d < median for d in ordered)
    out = []
    for d in differences:
        if d >= median:
            out.append(1.0)
        else:
            lower = sum(o < d for o in ordered)
            out.append(floor + (1.0 - floor) * lower / below)
    return out


def decide_by_rank(figures: Sequence[Tuple[Optional[float], Optional[float], float, float]],
                   settings: CheckSettings) -> List[Tuple[float, str]]:
    """Mode ``weigh``: weight and rule per frame from ``(repaired_psnr, render_psnr, valid_fraction, change_psnr)``
    by the rank of the difference within the round (see the module docstring); no frame gets weight 0."""
    floor = settings.rank_floor
    judged = [r is not None and p is not None and f >= settings.min_valid_fraction for r, p, f, _ in figures]
    if not any(judged):
        return [(1.0, RULE_NOTHING_TO_RANK) for _ in figures]
    weights = iter(rank_weights([r - p for (r, p, _, _), j in zip(figures, judged) if j], floor))
    out: List[Tuple[float, str]] = []
    for is_judged in judged:
        if is_judged:
            w = next(weights)
            out.append((w, RULE_AT_OR_ABOVE_MEDIAN if w >= 1.0 else RULE_BELOW_MEDIAN))
        else:
            out.append((math.nan, ""))
    confirmed = [c for (_, _, _, c), (w, rule) in zip(figures, out) if rule == RULE_AT_OR_ABOVE_MEDIAN]
    smallest_confirmed = min(confirmed)  # the median frame is always at or above the median
    for n, ((_, _, _, change), is_judged) in enumerate(zip(figures, judged)):
        if not is_judged:
            out[n] = (1.0, RULE_SMALL_CHANGE) if change >= smallest_confirmed else (floor, RULE_LARGE_CHANGE)
    return out


@dataclass
class NeighbourWarps:
    """The nearest training photos of one frame, warped into it: view indices, photos ``[H,W,3]``, valid pixels."""

    views: List[int]
    warped: List[torch.Tensor]
    valid: List[torch.Tensor]


def warp_neighbours(
    render_depth: torch.Tensor,
    cameras: Sequence[Pinhole],
    train_cameras: Sequence[Pinhole],
    train_view: Callable[[int], Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]],
    settings: CheckSettings = CheckSettings(),
) -> List[NeighbourWarps]:
    """For each of ``N`` frames (the render's z-depth ``[N,H,W]``), its ``settings.num_views`` nearest training
    photos warped into it. ``train_view(i)`` returns training view ``i``'s photo ``[h,w,3]`` in [0,1], the model's
    depth rendered there ``[h,w]`` and its mask (or None); it is called at most once per view (the caller renders
    only the views some frame needs)."""
    cache: Dict[int, Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = {}
    train_c2w = torch.stack([c.camera_to_world[:3, :4].float() for c in train_cameras])
    out = []
    for n, camera in enumerate(cameras):
        views = nearest_views(camera.camera_to_world, train_c2w, settings.num_views)
        warped, valid = [], []
        for i in views:
            if i not in cache:
                cache[i] = train_view(i)
            photo, depth, mask = cache[i]
            wp, ok = warp_training_view(photo, depth, train_cameras[i], render_depth[n], camera, mask,
                                        settings.depth_tolerance)
            warped.append(wp)
            valid.append(ok)
        out.append(NeighbourWarps(views, warped, valid))
    return out


def nearest_warps(warps: Sequence[NeighbourWarps], k: int) -> List[NeighbourWarps]:
    """Each frame's ``k`` nearest warps (:func:`warp_neighbours` orders them nearest first), so that one set of
    warps serves both a check over few views and a mask over many."""
    return [NeighbourWarps(w.views[:k], w.warped[:k], w.valid[:k]) for w in warps]


def check_frames(
    repaired_rgb: torch.Tensor,
    render_rgb: torch.Tensor,
    warps: Sequence[NeighbourWarps],
    settings: CheckSettings = CheckSettings(),
) -> List[FrameVerdict]:
    """Judge ``N`` repaired frames (``repaired_rgb`` / ``render_rgb`` float ``[N,H,W,3]`` in [0,1]) against the
    training photos warped into them (:func:`warp_neighbours`, with the same ``settings``)."""
    figures = []
    for n, frame in enumerate(warps):
        repaired_psnr, render_psnr, fraction = compare_with_photos(repaired_rgb[n], render_rgb[n], frame.warped,
                                                                   frame.valid)
        change = masked_psnr(repaired_rgb[n], render_rgb[n], torch.ones(repaired_rgb.shape[1:3], dtype=torch.bool))
        figures.append((repaired_psnr, render_psnr, fraction, change))
    verdicts = []
    for (repaired_psnr, render_psnr, fraction, change), frame, (weight, rule) in zip(
            figures, warps, (decide_by_rank if settings.by_rank else decide)(figures, settings)):
        verdicts.append(FrameVerdict(weight=weight, rule=rule, valid_fraction=round(fraction, 4),
                                     repaired_psnr=repaired_psnr, render_psnr=render_psnr, change_psnr=change,
                                     views=frame.views))
    return verdicts


def confirmed_pixels(render_rgb: torch.Tensor, warps: Sequence[NeighbourWarps], tolerance: float) -> torch.Tensor:
    """Pixels ``[N,H,W]`` where a training photo confirms the render: some nearest photo sees the render's surface
    there (:func:`warp_training_view`) and its colour differs from the render's by at most ``tolerance`` (mean
    absolute difference over the channels, colours in [0,1]). There the render is what the photos say; the video
    model can only add its reproduction cost (VAE, colour drift; measured in docs/benchmarks.md, "Keep the
    confirmed render")."""
    out = torch.zeros(render_rgb.shape[:3], dtype=torch.bool)
    for n, frame in enumerate(warps):
        for photo, valid in zip(frame.warped, frame.valid):
            close = (render_rgb[n].float() - photo.float()).abs().mean(-1) <= tolerance
            out[n] |= (valid & close).cpu()
    return out


def observed_pixels(warps: Sequence[NeighbourWarps], shape: Sequence[int]) -> torch.Tensor:
    """Pixels ``[N,H,W]`` (``shape``) that at least one of each frame's nearest training photos sees
    (:func:`warp_training_view`'s valid pixels), whatever its colour there."""
    out = torch.zeros(tuple(shape), dtype=torch.bool)
    for n, frame in enumerate(warps):
        for valid in frame.valid:
            out[n] |= valid.cpu()
    return out


def summarize(verdicts: Sequence[FrameVerdict]) -> Dict[str, object]:
    """Counts per rule, how many frames kept a weight above 0 and their mean weight (the pipeline's per-round
    record)."""
    by_rule: Dict[str, int] = {}
    for v in verdicts:
        by_rule[v.rule] = by_rule.get(v.rule, 0) + 1
    gains = [v.gain_db for v in verdicts if v.gain_db is not None]
    return {"frames": len(verdicts), "kept": sum(v.weight > 0 for v in verdicts),
            "mean_weight": round(sum(v.weight for v in verdicts) / len(verdicts), 4) if verdicts else None,
            "by_rule": by_rule, "mean_gain_db": round(sum(gains) / len(gains), 3) if gains else None}


def pinholes(camera_to_worlds: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
             cy: torch.Tensor) -> List[Pinhole]:
    """:class:`Pinhole` cameras from batched nerfstudio fields (``[N,3,4]`` poses, ``[N]`` or ``[N,1]`` intrinsics)."""
    flat = lambda t: t.reshape(-1).tolist()  # noqa: E731
    return [Pinhole(c2w, a, b, c, d) for c2w, a, b, c, d in
            zip(camera_to_worlds[:, :3, :4].float(), flat(fx), flat(fy), flat(cx), flat(cy))]
