"""Densification rules on hand-built statistics: which surfels each rule selects, and that Adam state follows."""

from __future__ import annotations

import math

import pytest
import torch

from genfusion_ns.model.densification import (
    SparseAwareStrategy,
    Vanilla2DGSStrategy,
    mean_gradients,
    select_growth,
    select_prune,
)

GRAD_T = 2e-4


def make_params(ids, extents, opacities):
    """Surfels identified by ``features_dc[:, 0] == id``; flat (thickness 1e-3) with the given in-plane extent."""
    n = len(ids)
    log_ext = torch.log(torch.tensor(extents, dtype=torch.float32))
    scales = torch.stack([log_ext, log_ext - math.log(2.0), log_ext + math.log(1e-3)], dim=-1)
    params = {
        "means": torch.nn.Parameter(torch.randn(n, 3)),
        "scales": torch.nn.Parameter(scales),
        "quats": torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(n, 4), dim=-1)),
        "features_dc": torch.nn.Parameter(torch.tensor(ids, dtype=torch.float32)[:, None].repeat(1, 3)),
        "features_rest": torch.nn.Parameter(torch.zeros(n, 3, 3)),
        "opacities": torch.nn.Parameter(torch.logit(torch.tensor(opacities, dtype=torch.float32))[:, None]),
    }
    optimizers = {k: torch.optim.Adam([p], lr=1e-3, eps=1e-15) for k, p in params.items()}
    # One step with row-identifiable gradients so every row has its own exp_avg / exp_avg_sq.
    for k, p in params.items():
        row_id = params["features_dc"].detach()[:, :1]
        p.grad = (row_id + 1.0).reshape(n, *([1] * (p.dim() - 1))).expand_as(p).clone()
        optimizers[k].step()
    return params, optimizers


def state_with(strategy, grad_norm_sum, counts, max_radii=None, extent=1.0):
    state = strategy.initialize_state(extent)
    state["grad_accum"] = torch.tensor(grad_norm_sum, dtype=torch.float32)
    state["visible_count"] = torch.tensor(counts, dtype=torch.float32)
    state["max_radii"] = torch.tensor(max_radii or [0.0] * len(counts), dtype=torch.float32)
    return state


def row_ids(params):
    return params["features_dc"][:, 0].detach().round().long().tolist()


def adam_row_ids(params, optimizers, name="means"):
    """Row identity recovered from Adam's first moment (exp_avg = 0.1 * (id + 1) after one step; 0 for new rows)."""
    p = params[name]
    exp_avg = optimizers[name].state[p]["exp_avg"]
    assert exp_avg.shape == p.shape, "Adam state was not resized with the parameter"
    first = exp_avg.reshape(len(p), -1)[:, 0]
    return [round(v / 0.1) - 1 if v != 0 else None for v in first.tolist()]


def test_mean_gradients_zero_for_unseen():
    assert mean_gradients(torch.tensor([4.0, 3.0]), torch.tensor([2.0, 0.0])).tolist() == [2.0, 0.0]


def test_select_growth_threshold_size_and_visibility_gate():
    #             0: small hot 1: small cold 2: large hot 3: large hot rare 4: small hot rare 5: exactly at T
    mean_grad = torch.tensor([3e-4, 1e-4, 5e-4, 5e-4, 9e-4, 2e-4])
    counts = torch.tensor([80.0, 80.0, 80.0, 10.0, 49.0, 50.0])
    extent = torch.tensor([0.005, 0.005, 0.05, 0.05, 0.001, 0.01])
    clone, split = select_growth(mean_grad, counts, extent, GRAD_T, 0.01, min_visible=0)
    assert torch.where(clone)[0].tolist() == [0, 4, 5]
    assert torch.where(split)[0].tolist() == [2, 3]
    clone, split = select_growth(mean_grad, counts, extent, GRAD_T, 0.01, min_visible=50)
    assert torch.where(clone)[0].tolist() == [0, 5]  # 4 seen only 49 times
    assert torch.where(split)[0].tolist() == [2]  # 3 seen only 10 times


def test_sparse_aware_visibility_schedule_matches_authors():
    strategy = SparseAwareStrategy()
    expected = {0: 50, 99: 50, 100: 51, 1100: 61, 2000: 70, 3000: 80, 4000: 90, 5000: 100, 20000: 100}
    assert {step: strategy.min_visible(step) for step in expected} == {k: float(v) for k, v in expected.items()}
    assert Vanilla2DGSStrategy().min_visible(4000) == 0.0


def test_select_prune_rules():
    opac = torch.tensor([0.01, 0.5, 0.5, 0.5])
    extent = torch.tensor([0.01, 0.01, 0.5, 0.01])
    radii = torch.tensor([1.0, 1.0, 1.0, 30.0])
    assert torch.where(select_prune(opac, extent, radii, 0.05, None, None))[0].tolist() == [0]
    assert torch.where(select_prune(opac, extent, radii, 0.05, 20.0, 0.1))[0].tolist() == [0, 2, 3]


def _hand_built_case(strategy):
    # ids:          0 clone   1 idle   2 split   3 prune(low opacity)  4 idle, seen 600 times   5 hot but rare
    params, optimizers = make_params(
        ids=[0, 1, 2, 3, 4, 5],
        extents=[0.005, 0.005, 0.05, 0.005, 0.005, 0.005],
        opacities=[0.5, 0.5, 0.5, 0.01, 0.5, 0.5],
    )
    counts = [100, 100, 100, 100, 600, 10]
    mean = [3e-4, 1e-4, 4e-4, 1e-4, 1e-4, 9e-4]
    state = state_with(strategy, [m * c for m, c in zip(mean, counts)], counts)
    return params, optimizers, state


def test_vanilla_densify_selects_rows_moves_adam_state_and_resets_all_statistics():
    strategy = Vanilla2DGSStrategy(grad_threshold=GRAD_T, percent_dense=0.01)
    params, optimizers, state = _hand_built_case(strategy)
    parent_means = params["means"].detach().clone()
    parent_scales = params["scales"].detach().clone()
    counts = strategy.densify_and_prune(params, optimizers, state, step=1000)
    assert counts == {"cloned": 2, "split": 1, "pruned": 1}  # clones 0 and 5 (no gate), split 2, prune 3
    # Kept originals (in order), clones appended, then the split's two children; pruned row 3 gone.
    assert row_ids(params) == [0, 1, 4, 5, 0, 5, 2, 2]
    # Adam moments follow the rows: originals keep theirs, copies and children start at zero.
    for name in params:
        assert adam_row_ids(params, optimizers, name) == [0, 1, 4, 5, None, None, None, None], name
        assert optimizers[name].param_groups[0]["params"][0] is params[name]
    # Clones are exact copies; children scaled by 1/1.6 (thickness too) and displaced within the surfel plane.
    assert torch.equal(params["means"][4], parent_means[0])
    child_scales = params["scales"][6:].detach()
    assert torch.allclose(child_scales, (parent_scales[2] - math.log(1.6)).expand(2, 3))
    quat = torch.nn.functional.normalize(params["quats"][6].detach(), dim=-1)
    w, x, y, z = quat.tolist()
    normal = torch.tensor([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])
    offsets = params["means"][6:].detach() - parent_means[2]
    assert (offsets @ normal).abs().max() < 1e-6
    assert offsets.norm(dim=-1).min() > 0
    # Vanilla: every statistic restarts.
    assert all(state[k].abs().sum() == 0 and len(state[k]) == 8 for k in ("grad_accum", "visible_count", "max_radii"))


def test_sparse_aware_densify_gates_by_visibility_and_keeps_statistics():
    strategy = SparseAwareStrategy(grad_threshold=GRAD_T, percent_dense=0.01)
    params, optimizers, state = _hand_built_case(strategy)
    counts = strategy.densify_and_prune(params, optimizers, state, step=4000)  # gate T = 90
    assert counts == {"cloned": 1, "split": 1, "pruned": 1}  # 5 is hot but seen only 10 < 90 times
    assert row_ids(params) == [0, 1, 4, 5, 0, 2, 2]
    assert adam_row_ids(params, optimizers, "opacities") == [0, 1, 4, 5, None, None, None]
    visible = state["visible_count"].tolist()
    # Kept: idle 1 (100) and rare 5 (10). Restarted: clone source 0, its copy, split children, and 4 (600 > 500).
    assert visible == [0.0, 100.0, 0.0, 10.0, 0.0, 0.0, 0.0]
    assert state["grad_accum"][1].item() == pytest.approx(1e-4 * 100)


def test_sparse_aware_large_surfel_seen_often_still_splits():
    """The authors reset >500-view statistics between clone and split, so such surfels never split; we do."""
    strategy = SparseAwareStrategy(grad_threshold=GRAD_T)
    params, optimizers = make_params(ids=[0, 1], extents=[0.005, 0.05], opacities=[0.5, 0.5])
    state = state_with(strategy, [3e-4 * 600, 3e-4 * 600], [600, 600])
    strategy.densify_and_prune(params, optimizers, state, step=4000)
    assert row_ids(params) == [0, 0, 1, 1]


def test_update_statistics_scales_to_ndc_and_counts_only_visible():
    strategy = Vanilla2DGSStrategy()
    state = strategy.initialize_state()
    means2d = torch.zeros(1, 3, 2, requires_grad=True)
    (means2d * torch.tensor([[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]])).sum().backward()
    info = {"means2d": means2d, "radii": torch.tensor([[3, 7, 0]]), "width": 40, "height": 20}
    strategy.update_statistics(state, info, num_surfels=3)
    assert state["grad_accum"].tolist() == pytest.approx([20.0, 20.0, 0.0])  # 1*W/2 and 2*H/2; row 2 invisible
    assert state["visible_count"].tolist() == [1.0, 1.0, 0.0]
    assert state["max_radii"].tolist() == [3.0, 7.0, 0.0]


def test_schedule_densifies_on_interval_and_resets_opacity_with_adam_moments():
    strategy = Vanilla2DGSStrategy(refine_start_step=100, refine_every=100, reset_opacity_every=300)
    params, optimizers = make_params(ids=[0, 1], extents=[0.005, 0.005], opacities=[0.5, 0.5])
    state = strategy.initialize_state()
    means2d = torch.zeros(1, 2, 2, requires_grad=True)
    (means2d.sum() * 1e-6).backward()  # tiny gradients: nothing grows
    info = {"means2d": means2d, "radii": torch.tensor([[1, 1]]), "width": 10, "height": 10}
    strategy.step_post_backward(params, optimizers, state, step=150, info=info)
    assert state["visible_count"].tolist() == [1.0, 1.0]  # not an interval step: statistics kept
    strategy.step_post_backward(params, optimizers, state, step=200, info=info)
    assert state["visible_count"].tolist() == [0.0, 0.0]  # densification ran (vanilla reset)
    strategy.step_post_backward(params, optimizers, state, step=300, info=info)
    assert torch.sigmoid(params["opacities"]).max().item() == pytest.approx(0.01, rel=1e-4)
    opa_state = optimizers["opacities"].state[params["opacities"]]
    assert opa_state["exp_avg"].abs().sum() == 0 and opa_state["exp_avg_sq"].abs().sum() == 0
    strategy.step_post_backward(params, optimizers, state, step=150, info=info, update_statistics=False)
    assert state["visible_count"].tolist() == [0.0, 0.0]  # hook: a view that must not feed the statistics


def test_check_sanity_reports_missing_optimizer():
    params, optimizers = make_params(ids=[0], extents=[0.01], opacities=[0.5])
    del optimizers["quats"]
    with pytest.raises(KeyError, match="quats"):
        Vanilla2DGSStrategy().check_sanity(params, optimizers)
