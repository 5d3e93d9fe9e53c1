"""GenFusionDDIMScheduler against the authors' DDIM discretisations and schedule buffers (fixture case f)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from video_fixtures import load_cases

from genfusion_ns.video.scheduling import GenFusionDDIMScheduler, authors_timesteps, dynamic_rescale_table


def _tables() -> dict:
    _, cases = load_cases()
    return cases["f_scheduler"]["tables"]


def _alpha_atol() -> float:
    _, cases = load_cases()
    return float(cases["f_scheduler"]["recommended_tolerance"]["alphas_cumprod"]["atol"])


TABLE_NAMES = [
    f"{spacing}_{steps}"
    for spacing in ("uniform", "uniform_trailing")
    for steps in (3, 4, 5, 6, 7, 8, 25, 50)
]


def test_schedule_matches_checkpoint_buffers():
    tensors, _ = load_cases()
    scheduler = GenFusionDDIMScheduler()
    torch.testing.assert_close(
        scheduler.alphas_cumprod, tensors["sched.alphas_cumprod"], atol=_alpha_atol(), rtol=0
    )
    assert float(scheduler.alphas_cumprod[-1]) == 0.0  # zero terminal SNR
    assert float(scheduler.final_alpha_cumprod) == pytest.approx(float(tensors["sched.alphas_cumprod"][0]))
    torch.testing.assert_close(dynamic_rescale_table(), tensors["sched.scale_arr"], atol=0, rtol=0)


@pytest.mark.parametrize("name", TABLE_NAMES)
def test_authors_spacing_tables(name: str):
    table = _tables()[name]
    scheduler = GenFusionDDIMScheduler(timestep_spacing=table["spacing"])
    if "error" in table:
        with pytest.raises(ValueError, match="outside the 1000 training timesteps"):
            scheduler.set_timesteps(table["steps"])
        return
    scheduler.set_timesteps(table["steps"])
    assert scheduler.timesteps.tolist() == table["timesteps_sampling_order"]
    assert scheduler.num_inference_steps == len(table["timesteps_sampling_order"])

    ascending = table["timesteps_ascending"]
    previous = [scheduler.previous_timestep(t) for t in ascending]
    alpha_t = [scheduler.alpha_cumprod_at(t) for t in ascending]
    alpha_prev = [scheduler.alpha_cumprod_at(p) for p in previous]
    atol = _alpha_atol()
    np.testing.assert_allclose(alpha_t, table["alphas_cumprod_t"], atol=atol, rtol=0)
    np.testing.assert_allclose(alpha_prev, table["alphas_cumprod_prev"], atol=atol, rtol=0)
    sigmas = [GenFusionDDIMScheduler.ddim_sigma(a, p, 1.0) for a, p in zip(alpha_t, alpha_prev)]
    np.testing.assert_allclose(sigmas, table["sigma_eta1"], atol=1e-5, rtol=0)

    # Dynamic rescale: s(t) at each step and s(previous step), with the ratio 1 at the last step.
    scale = dynamic_rescale_table()
    scale_prev = [float(scale[p]) if p >= 0 else float(scale[t]) for t, p in zip(ascending, previous)]
    np.testing.assert_allclose([float(scale[t]) for t in ascending], table["scale_t"], atol=1e-7, rtol=0)
    np.testing.assert_allclose(scale_prev, table["scale_prev"], atol=1e-7, rtol=0)


def test_quirks_differ_from_diffusers_rules():
    """The authors' rules are not diffusers': uniform/6 runs 7 steps, uniform_trailing/6 steps 999 -> 832."""
    assert len(authors_timesteps("uniform", 6)) == 7
    assert authors_timesteps("uniform", 1).tolist() == [1]
    assert authors_timesteps("uniform_trailing", 1).tolist() == [999]
    ours = GenFusionDDIMScheduler(timestep_spacing="uniform_trailing")
    ours.set_timesteps(6)
    theirs = GenFusionDDIMScheduler(timestep_spacing="trailing")
    theirs.set_timesteps(6)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()  # same grid ...
    assert ours.previous_timestep(999) == 832  # ... but a different previous timestep
    assert theirs.previous_timestep(999) == 833


@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("trailing", 0), ("linspace", 0)])
def test_diffusers_spacings_step_like_diffusers(spacing: str, offset: int):
    """diffusers' own spacings keep diffusers' DDIM arithmetic (eta=0, v-prediction)."""
    kwargs = {"timestep_spacing": spacing, "steps_offset": offset}
    ours = GenFusionDDIMScheduler(**kwargs)
    reference = DDIMScheduler(**{k: v for k, v in ours.config.items() if not k.startswith("_")})
    ours.set_timesteps(10)
    reference.set_timesteps(10)
    assert ours.timesteps.tolist() == reference.timesteps.tolist()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 3, 5, 6, generator=generator)
    for t in ours.timesteps[1:]:  # diffusers' float32 sigma is fine away from t=999
        v = torch.randn(sample.shape, generator=generator)
        expected = reference.step(v, t, sample, eta=0.0).prev_sample
        torch.testing.assert_close(
            ours.step(v, t, sample, eta=0.0).prev_sample, expected, atol=2e-6, rtol=1e-5
        )


def test_eta_one_at_terminal_timestep_is_finite():
    """At t=999 (alpha 0) with eta=1 the direction coefficient must not become NaN."""
    scheduler = GenFusionDDIMScheduler(timestep_spacing="uniform_trailing")
    scheduler.set_timesteps(25)
    assert int(scheduler.timesteps[0]) == 999
    sample = torch.randn(1, 4, 2, 4, 4)
    v = torch.randn_like(sample)
    noise = torch.randn_like(sample)
    out = scheduler.step(v, 999, sample, eta=1.0, variance_noise=noise)
    assert torch.isfinite(out.prev_sample).all()
    alpha_prev = scheduler.alpha_cumprod_at(scheduler.previous_timestep(999))
    sigma = GenFusionDDIMScheduler.ddim_sigma(0.0, alpha_prev, 1.0)
    assert sigma == pytest.approx(math.sqrt(1.0 - alpha_prev))  # all remaining variance is fresh noise
    # At alpha 0: x0 = -v and the deterministic direction term vanishes.
    torch.testing.assert_close(out.pred_original_sample, -v)
    torch.testing.assert_close(out.prev_sample, math.sqrt(alpha_prev) * -v + sigma * noise)


def test_step_rejects_unknown_timestep_and_bad_config(tmp_path):
    scheduler = GenFusionDDIMScheduler()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.step(torch.zeros(1), 1, torch.zeros(1))
    scheduler.set_timesteps(5)
    with pytest.raises(ValueError, match="not in the current schedule"):
        scheduler.step(torch.zeros(1), 500, torch.zeros(1))
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        GenFusionDDIMScheduler(timestep_spacing="karras")


def test_config_round_trip(tmp_path):
    scheduler = GenFusionDDIMScheduler(timestep_spacing="uniform_trailing")
    scheduler.save_pretrained(tmp_path)
    loaded = GenFusionDDIMScheduler.from_pretrained(tmp_path)
    assert type(loaded) is GenFusionDDIMScheduler
    assert loaded.config.timestep_spacing == "uniform_trailing"
    assert loaded.config.prediction_type == "v_prediction"
    assert loaded.config.rescale_betas_zero_snr and not loaded.config.set_alpha_to_one
