"""Densification strategies for 2D Gaussian surfels: vanilla 2DGS and GenFusion's sparse-aware variant.

Designed like gsplat's ``strategy`` package: a strategy is a small config dataclass with ``initialize_state`` /
``step_post_backward``, operating on a dict of per-surfel parameters plus one optimizer per parameter. The parameter
surgery (clone, split, prune, opacity reset) is gsplat's own ``gsplat.strategy.ops`` -- pure PyTorch, CPU safe -- so
the Adam moments (``exp_avg``/``exp_avg_sq``) follow every change: copied rows get zero moments, removed rows lose
theirs.

Statistics come from the screen-space positional gradient of each view (``means2d.grad``, pixels). As in gsplat and
the 2DGS release it is converted to NDC units (x by W/2, y by H/2) and its L2 norm is accumulated, so the authors'
threshold (2e-4) keeps its meaning. The authors' vendored rasterizer additionally appends two absolute-gradient
components that are only non-zero for surfels rendered through the sub-pixel low-pass fallback; we leave them out
(the 2-component gradient of the 2DGS release): they only nudge densification of surfels already smaller than a pixel.

Step convention: ``step`` is nerfstudio's 0-based step, used directly where the authors use their 1-based iteration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import torch

# gsplat.strategy.ops imports gsplat's CUDA wrappers lazily; the ops used here are pure PyTorch.
from gsplat.strategy.ops import duplicate, remove, reset_opa, split
from torch import Tensor

REQUIRED_PARAMS = ("means", "scales", "quats", "opacities")
"""Per-surfel parameters the size/opacity rules read; every other key in ``params`` just follows the surgery."""

_STAT_KEYS = ("grad_accum", "visible_count", "max_radii")


def surfel_extent(log_scales: Tensor) -> Tensor:
    """World-space extent of each surfel: the larger of its two in-plane scales (the third axis is a thickness)."""
    return torch.exp(log_scales[:, :2]).max(dim=-1).values


def mean_gradients(grad_accum: Tensor, visible_count: Tensor) -> Tensor:
    """Average accumulated gradient norm per surfel; 0 for surfels never seen (the authors' NaN -> 0)."""
    return torch.where(visible_count > 0, grad_accum / visible_count.clamp_min(1), torch.zeros_like(grad_accum))


def select_growth(
    mean_grad: Tensor,
    visible_count: Tensor,
    extent: Tensor,
    grad_threshold: float,
    size_threshold: float,
    min_visible: float,
) -> tuple[Tensor, Tensor]:
    """Masks of surfels to clone (small) and to split (large).

    A surfel grows when its averaged gradient reaches ``grad_threshold`` and it was visible in at least
    ``min_visible`` training views since its statistics were last reset (0 disables that gate).
    """
    grows = (mean_grad >= grad_threshold) & (visible_count >= min_visible)
    is_small = extent <= size_threshold
    return grows & is_small, grows & ~is_small


def select_prune(
    opacities: Tensor,
    extent: Tensor,
    max_radii: Tensor,
    min_opacity: float,
    max_screen_radius: float | None,
    max_world_extent: float | None,
) -> Tensor:
    """Mask of surfels to remove: too transparent, or (once size pruning is on) too big on screen or in the world."""
    prune = opacities < min_opacity
    if max_screen_radius is not None:
        prune |= max_radii > max_screen_radius
    if max_world_extent is not None:
        prune |= extent > max_world_extent
    return prune


@dataclass
class SurfelStrategy:
    """Shared schedule and rules of 2DGS densification; subclasses choose the visibility gate and statistic reset.

    Sizes are relative to the scene extent stored in the state (``initialize_state(scene_extent)``); the authors use
    1.1 x the largest distance of a training camera from the cameras' mean.
    """

    grad_threshold: float = 2e-4
    """Averaged NDC screen-space gradient norm at which a surfel is cloned or split (``densify_grad_threshold``)."""
    percent_dense: float = 0.01
    """Surfels with extent <= percent_dense x scene extent are cloned, larger ones split."""
    refine_start_step: int = 500
    """Densify only at steps strictly after this one (``densify_from_iter``)."""
    refine_stop_step: int = 15000
    """Statistics, densification and opacity resets stop at this step (``densify_until_iter``, exclusive)."""
    refine_every: int = 100
    """Densification interval in steps (``densification_interval``)."""
    prune_opacity: float = 0.05
    """Surfels below this opacity are pruned at every densification (``opacity_cull``)."""
    reset_opacity_every: int = 3000
    """Opacities are clamped to ``reset_opacity_value`` every this many steps; size pruning starts after the first."""
    reset_opacity_value: float = 0.01
    """Post-sigmoid value opacities are clamped to at a reset."""
    prune_screen_radius: float = 20.0
    """Once size pruning is on: prune surfels whose largest screen radius since the last reset exceeds this (px)."""
    prune_world_fraction: float = 0.1
    """Once size pruning is on: prune surfels larger than this fraction of the scene extent."""
    split_children: int = 2
    """Children per split surfel; gsplat's split (and the authors') makes exactly 2."""
    verbose: bool = False
    """Print the number of cloned / split / pruned surfels at every densification."""

    def __post_init__(self) -> None:
        if self.split_children != 2:
            raise ValueError("split_children must be 2 (gsplat's split and the 2DGS recipe create two children).")
        if self.refine_every <= 0 or self.reset_opacity_every <= 0:
            raise ValueError("refine_every and reset_opacity_every must be positive step counts.")

    # --- hooks the two variants differ in -------------------------------------------------------------------
    def min_visible(self, step: int) -> float:
        """Minimum visibility count for growth at ``step`` (0 = no gate)."""
        return 0.0

    def statistics_to_reset(self, state: Mapping[str, Any], densified: Tensor) -> Tensor:
        """Mask of surfels whose statistics restart after a densification; ``densified`` marks selected + new ones."""
        return torch.ones_like(densified)

    # --- gsplat-like strategy API ----------------------------------------------------------------------------
    def initialize_state(self, scene_extent: float = 1.0) -> dict[str, Any]:
        """Fresh running state; the per-surfel tensors are created lazily at the first statistics update."""
        if not math.isfinite(scene_extent) or scene_extent <= 0:
            raise ValueError(f"scene_extent must be a positive finite number, got {scene_extent}.")
        return {"scene_extent": float(scene_extent), "grad_accum": None, "visible_count": None, "max_radii": None}

    def check_sanity(self, params: Mapping[str, Tensor], optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        """Fail early (clear message) when the parameter / optimizer layout cannot follow the surgery."""
        missing = [key for key in REQUIRED_PARAMS if key not in params]
        if missing:
            raise KeyError(f"Densification needs per-surfel parameters {missing}; got {sorted(params)}.")
        num = len(params["means"])
        for name, param in params.items():
            if len(param) != num:
                raise ValueError(f"Parameter '{name}' has {len(param)} rows, expected {num} (one per surfel).")
            if name not in optimizers:
                raise KeyError(f"No optimizer for surfel parameter '{name}'; every parameter needs its own optimizer.")
            groups = optimizers[name].param_groups
            if len(groups) != 1 or len(groups[0]["params"]) != 1:
                raise ValueError(f"Optimizer of '{name}' must hold exactly one parameter group with one tensor.")

    def update_statistics(self, state: MutableMapping[str, Any], info: Mapping[str, Any], num_surfels: int) -> None:
        """Accumulate one rendered batch of views: gradient norms, visibility counts and max screen radii.

        ``info`` needs ``means2d`` (with ``.grad`` after backward, [C,N,2] pixels), ``radii`` ([C,N], 0 = not
        visible), ``width`` and ``height``.
        """
        means2d = info["means2d"]
        if means2d.grad is None:
            raise RuntimeError("means2d has no gradient: call means2d.retain_grad() before backward.")
        grads = means2d.grad.detach().clone()
        grads[..., 0] *= info["width"] / 2.0
        grads[..., 1] *= info["height"] / 2.0
        radii = info["radii"]
        device = grads.device
        for key in _STAT_KEYS:
            if state[key] is None or len(state[key]) != num_surfels:  # first use, or surfels changed elsewhere
                state[key] = torch.zeros(num_surfels, device=device)
        visible = radii > 0
        ids = torch.where(visible)[1]
        state["grad_accum"].index_add_(0, ids, grads[visible].norm(dim=-1))
        state["visible_count"].index_add_(0, ids, torch.ones_like(ids, dtype=torch.float32))
        state["max_radii"].index_reduce_(0, ids, radii[visible].float(), "amax")

    def step_post_backward(
        self,
        params: MutableMapping[str, torch.nn.Parameter],
        optimizers: Mapping[str, torch.optim.Optimizer],
        state: MutableMapping[str, Any],
        step: int,
        info: Mapping[str, Any] | None,
        update_statistics: bool = True,
    ) -> None:
        """Run after ``loss.backward()``: record statistics, then densify / prune / reset opacity on schedule.

        ``update_statistics=False`` (or ``info=None``) skips the bookkeeping for views that should not steer
        densification (e.g. generated frames), while the schedule still runs.
        """
        if step >= self.refine_stop_step:
            return
        num = len(params["means"])
        if update_statistics and info is not None:
            self.update_statistics(state, info, num)
        if step > self.refine_start_step and step % self.refine_every == 0 and state["grad_accum"] is not None:
            self.densify_and_prune(params, optimizers, state, step)
        if step > 0 and step % self.reset_opacity_every == 0:
            reset_opa(params=params, optimizers=optimizers, state={}, value=self.reset_opacity_value)

    @torch.no_grad()
    def densify_and_prune(
        self,
        params: MutableMapping[str, torch.nn.Parameter],
        optimizers: Mapping[str, torch.optim.Optimizer],
        state: MutableMapping[str, Any],
        step: int,
    ) -> dict[str, int]:
        """Clone, split, prune and reset statistics once; returns the counts (for logs and tests)."""
        scene_extent = state["scene_extent"]
        mean_grad = mean_gradients(state["grad_accum"], state["visible_count"])
        is_clone, is_split = select_growth(
            mean_grad,
            state["visible_count"],
            surfel_extent(params["scales"]),
            self.grad_threshold,
            self.percent_dense * scene_extent,
            self.min_visible(step),
        )
        n_clone, n_split = int(is_clone.sum()), int(is_split.sum())
        # 'densified' rides along in the state so gsplat's ops carry it to copies and children.
        state["densified"] = (is_clone | is_split).float()
        if n_clone:
            tensors = _tensor_state(state)
            duplicate(params=params, optimizers=optimizers, state=tensors, mask=is_clone)
            state.update(tensors)
        if n_split:
            # Clones were appended at the end and are never split in the same call.
            split_mask = torch.cat([is_split, is_split.new_zeros(n_clone)])
            _split_in_plane(params, optimizers, state, split_mask)
        densified = state.pop("densified") > 0

        size_pruning = step > self.reset_opacity_every
        is_prune = select_prune(
            torch.sigmoid(params["opacities"].flatten()),
            surfel_extent(params["scales"]),
            state["max_radii"],
            self.prune_opacity,
            self.prune_screen_radius if size_pruning else None,
            self.prune_world_fraction * scene_extent if size_pruning else None,
        )
        reset = self.statistics_to_reset(state, densified)
        state["reset"] = reset.float()
        n_prune = int(is_prune.sum())
        if n_prune:
            tensors = _tensor_state(state)
            remove(params=params, optimizers=optimizers, state=tensors, mask=is_prune)
            state.update(tensors)
        reset = state.pop("reset") > 0
        for key in _STAT_KEYS:
            state[key][reset] = 0.0
        if self.verbose:
            print(
                f"step {step}: {n_clone} surfels cloned, {n_split} split, {n_prune} pruned; "
                f"now {len(params['means'])}."
            )
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}


def _tensor_state(state: MutableMapping[str, Any]) -> dict[str, Tensor]:
    """The per-surfel entries of the state (what gsplat's ops must resize along with the parameters)."""
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}


def _split_in_plane(
    params: MutableMapping[str, torch.nn.Parameter],
    optimizers: Mapping[str, torch.optim.Optimizer],
    state: MutableMapping[str, Any],
    mask: Tensor,
) -> None:
    """gsplat's split with the normal-axis scale zeroed while sampling, so children stay in the surfel's plane.

    gsplat samples child offsets from N(0, diag(s)) over all three axes; 2DGS samples from diag(s_u, s_v, 0). The
    thickness scale is restored (and divided by 1.6 like the others) right after.
    """
    thickness = params["scales"].data[:, 2].clone()
    params["scales"].data[:, 2] = -30.0  # exp(-30) ~ 1e-13: no offset along the normal
    tensors = _tensor_state(state)
    tensors["_thickness"] = thickness
    split(params=params, optimizers=optimizers, state=tensors, mask=mask)
    thickness = tensors.pop("_thickness")
    n_children = 2 * int(mask.sum())  # gsplat appends the children after the kept rows
    thickness[len(thickness) - n_children :] -= math.log(1.6)
    params["scales"].data[:, 2] = thickness
    state.update(tensors)


@dataclass
class Vanilla2DGSStrategy(SurfelStrategy):
    """2DGS release densification: no visibility gate; every surfel's statistics restart after each densification.

    The defaults here are GenFusion's sparse-view recipe (``batch_sparse.py``: from 100, every 500, until 5000,
    opacity reset every 3100), which uses vanilla densification.
    """

    refine_start_step: int = 100
    refine_stop_step: int = 5000
    refine_every: int = 500
    reset_opacity_every: int = 3100


@dataclass
class SparseAwareStrategy(SurfelStrategy):
    """GenFusion's sparse-aware densification (masked / crop recipe, ``gaussian_model.py`` L483-L530).

    * Growth gate: a surfel is cloned or split only if it was visible in at least
      ``min(min_visible_cap, min_visible_base + step // min_visible_step)`` views since its statistics last restarted
      (authors: min(100, 50 + it // 100)).
    * Statistics are kept across densifications (rarely seen surfels keep averaging); they restart only for surfels
      just densified (and their copies / children) and for surfels seen more than ``statistics_window`` times.

    Deviation from the authors' code (their bug, §4.4 of our notes): they apply the reset between the clone and the
    split pass, so a large surfel seen > 500 times is reset before the split test and never splits in that call. We
    select clones and splits from the same statistics and reset once afterwards -- the intended sliding window.
    """

    refine_start_step: int = 1000
    refine_stop_step: int = 15000
    refine_every: int = 100
    reset_opacity_every: int = 9000
    min_visible_base: int = 50
    """Visibility gate at step 0."""
    min_visible_step: int = 100
    """The gate grows by one every this many steps."""
    min_visible_cap: int = 100
    """Upper bound of the visibility gate."""
    statistics_window: int = 500
    """Statistics of a surfel restart once its visibility count exceeds this."""

    def min_visible(self, step: int) -> float:
        return float(min(self.min_visible_cap, self.min_visible_base + step // self.min_visible_step))

    def statistics_to_reset(self, state: Mapping[str, Any], densified: Tensor) -> Tensor:
        return densified | (state["visible_count"] > self.statistics_window)
