"""DDIM with the GenFusion/DynamiCrafter timestep spacings, and DynamiCrafter's dynamic x0 rescale table.

GenFusion samples with its own DDIM discretisations ("uniform" at reconstruction time, "uniform_trailing" in
training logs). Their quirks matter for reproducing the released model's outputs:

* ``"uniform"``: ``range(0, T, T // S) + 1``. When ``T % S != 0`` this yields *more* than ``S`` steps (S=6
  runs 7 steps from t=997); when ``T // S`` divides ``T - 1`` the largest timestep would be ``T`` (S=3 ->
  1000), which the authors' code crashes on. We raise a :class:`ValueError` that says which step counts work
  instead.
* ``"uniform_trailing"``: ``round(arange(T, 0, -T / S)) - 1`` and the *previous* timestep of a step is the
  next element of that list. diffusers' ``"trailing"`` uses ``t - T // S`` instead, which differs when
  ``T % S != 0`` (S=6: 999 -> 832 here, 833 in diffusers).
* The last step's "previous" alpha is ``alphas_cumprod[0]`` (``set_alpha_to_one=False``), so a little fresh
  noise remains in the final latent at ``eta > 0``.

diffusers' own ``"leading"``, ``"trailing"`` and ``"linspace"`` spacings stay available with diffusers' rules.
The DDIM sigma is computed in float64: at ``alphas_cumprod == 0`` (t=999 with zero-terminal SNR) and
``eta > 0`` the direction coefficient ``sqrt(1 - a_prev - sigma^2)`` is the square root of a rounding-level
number, which in float32 can be negative and give NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMScheduler, DDIMSchedulerOutput

# diffusers' pipeline loader looks the loader base class up *in the component's module namespace*
# (``getattr(module, "SchedulerMixin")``) for classes outside diffusers/transformers: keep it importable.
from diffusers.schedulers.scheduling_utils import SchedulerMixin  # noqa: F401
from diffusers.utils.torch_utils import randn_tensor

AUTHORS_SPACINGS = ("uniform", "uniform_trailing")
DIFFUSERS_SPACINGS = ("leading", "trailing", "linspace")
TIMESTEP_SPACINGS = AUTHORS_SPACINGS + DIFFUSERS_SPACINGS


def _working_uniform_step_counts(num_train_timesteps: int, limit: int = 60) -> list[int]:
    """Step counts <= ``limit`` for which the authors' "uniform" spacing stays inside the training range."""
    return [s for s in range(1, limit + 1) if (num_train_timesteps - 1) % (num_train_timesteps // s) != 0]


def authors_timesteps(spacing: str, num_inference_steps: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """Timesteps of the authors' DDIM discretisation, in sampling (descending) order.

    Reproduces the step-count quirks on purpose (see the module docstring); the returned length can exceed
    ``num_inference_steps`` for "uniform".
    """
    if num_inference_steps < 1 or num_inference_steps > num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}"
        )
    if spacing == "uniform":
        stride = num_train_timesteps // num_inference_steps
        ascending = np.arange(0, num_train_timesteps, stride, dtype=np.int64) + 1
        if ascending[-1] >= num_train_timesteps:
            working = _working_uniform_step_counts(num_train_timesteps)
            raise ValueError(
                f'timestep_spacing="uniform" with {num_inference_steps} steps would need timestep '
                f"{int(ascending[-1])}, outside the {num_train_timesteps} training timesteps "
                f"(the authors' code crashes here too). Use another step count "
                f"(e.g. one of {working[:12]}...) or "
                f'timestep_spacing="leading" (diffusers\' equivalent with exactly '
                f"{num_inference_steps} steps)."
            )
    elif spacing == "uniform_trailing":
        stride = num_train_timesteps / num_inference_steps
        ascending = np.flip(np.round(np.arange(num_train_timesteps, 0, -stride))).astype(np.int64) - 1
    else:
        raise ValueError(f"{spacing!r} is not one of the authors' spacings {AUTHORS_SPACINGS}")
    return ascending[::-1].copy()


def dynamic_rescale_table(
    base_scale: float = 0.7, turning_step: int = 400, num_train_timesteps: int = 1000
) -> torch.Tensor:
    """DynamiCrafter's per-timestep x0 scale ``s(t)``: linear 1 -> ``base_scale`` over ``turning_step`` steps.

    Training multiplies x0 by ``s(t)`` before noising, so sampling multiplies the x0 prediction by
    ``s(t_prev) / s(t)`` at every step. Values are float64 linspace rounded to float32, like the authors'
    buffer.
    """
    if not 0.0 < base_scale <= 1.0:
        raise ValueError(f"dynamic-rescale base_scale must be in (0, 1], got {base_scale}")
    if turning_step < 1:
        raise ValueError(f"dynamic-rescale turning_step must be >= 1, got {turning_step}")
    ramp = np.linspace(1.0, base_scale, turning_step)
    flat = np.full(num_train_timesteps, base_scale)
    return torch.from_numpy(np.concatenate([ramp, flat])).to(torch.float32)


class GenFusionDDIMScheduler(DDIMScheduler):
    """``DDIMScheduler`` with GenFusion's defaults and the authors' "uniform"/"uniform_trailing" spacings.

    Defaults are the released model's: scaled-linear betas 0.00085..0.012 with zero-terminal-SNR rescale,
    v-prediction, ``set_alpha_to_one=False`` and the reconstruction loop's "uniform" spacing. Every config
    field is the parent's, so the scheduler folder stays a plain diffusers ``scheduler_config.json``.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = False,
        set_alpha_to_one: bool = False,
        steps_offset: int = 0,
        prediction_type: str = "v_prediction",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "uniform",
        rescale_betas_zero_snr: bool = True,
    ):
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            clip_sample=clip_sample,
            set_alpha_to_one=set_alpha_to_one,
            steps_offset=steps_offset,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )
        # Python copies of the schedule: a step reads no tensor, so the sampling loop never waits on the device.
        self._alpha_values: list[float] = self.alphas_cumprod.tolist()
        self._final_alpha: float = float(self.final_alpha_cumprod)

    @property
    def timesteps(self) -> torch.Tensor:
        return self._timesteps

    @timesteps.setter
    def timesteps(self, value: torch.Tensor) -> None:
        # Every assignment (set_timesteps, a caller truncating the schedule) refreshes the Python copy that
        # previous_timestep reads, so stepping converts no tensor to a number.
        self._timesteps = value
        self._timestep_values: list[int] = value.tolist()

    @property
    def uses_authors_spacing(self) -> bool:
        return self.config.timestep_spacing in AUTHORS_SPACINGS

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the sampling timesteps; for "uniform" the number actually run can exceed the request."""
        if not self.uses_authors_spacing:
            super().set_timesteps(num_inference_steps, device=device)
            return
        timesteps = authors_timesteps(
            self.config.timestep_spacing, num_inference_steps, self.config.num_train_timesteps
        )
        self.num_inference_steps = len(timesteps)
        self.timesteps = torch.from_numpy(timesteps).to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep a DDIM step from ``timestep`` lands on; -1 means "past the end" (final alpha)."""
        t = int(timestep)
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(...) before stepping the scheduler")
        if self.uses_authors_spacing:
            values = self._timestep_values
            if t not in values:
                raise ValueError(f"timestep {t} is not in the current schedule {values}")
            index = values.index(t)
            return values[index + 1] if index + 1 < len(values) else -1
        return t - self.config.num_train_timesteps // self.num_inference_steps

    def alpha_cumprod_at(self, timestep: int) -> float:
        """``alphas_cumprod[t]`` as a Python float, with the final alpha for ``t < 0``."""
        return self._final_alpha if timestep < 0 else self._alpha_values[timestep]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """One DDIM step (Song et al. eq. 12) with the spacing-aware previous timestep and a float64 sigma.

        Given an ``int`` timestep it reads no tensor (coefficients are Python floats): no host-device
        synchronisation. ``eta > 0`` without ``variance_noise`` draws the noise here (on the generator's device).
        """
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(...) before stepping the scheduler")
        t = int(timestep)
        alpha_t = self.alpha_cumprod_at(t)
        alpha_prev = self.alpha_cumprod_at(self.previous_timestep(t))
        sqrt_alpha_t, sqrt_one_minus_alpha_t = math.sqrt(alpha_t), math.sqrt(1.0 - alpha_t)

        prediction_type = self.config.prediction_type
        if prediction_type == "v_prediction":
            pred_original_sample = sqrt_alpha_t * sample - sqrt_one_minus_alpha_t * model_output
            pred_epsilon = sqrt_alpha_t * model_output + sqrt_one_minus_alpha_t * sample
        elif prediction_type == "epsilon":
            pred_original_sample = (sample - sqrt_one_minus_alpha_t * model_output) / sqrt_alpha_t
            pred_epsilon = model_output
        elif prediction_type == "sample":
            pred_original_sample = model_output
            pred_epsilon = (sample - sqrt_alpha_t * pred_original_sample) / sqrt_one_minus_alpha_t
        else:
            raise ValueError(f"prediction_type {prediction_type!r} must be epsilon, sample or v_prediction")

        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            limit = self.config.clip_sample_range
            pred_original_sample = pred_original_sample.clamp(-limit, limit)
        if use_clipped_model_output:
            pred_epsilon = (sample - sqrt_alpha_t * pred_original_sample) / sqrt_one_minus_alpha_t

        sigma = self.ddim_sigma(alpha_t, alpha_prev, eta)
        direction_coefficient = math.sqrt(max(1.0 - alpha_prev - sigma**2, 0.0))
        prev_sample = math.sqrt(alpha_prev) * pred_original_sample + direction_coefficient * pred_epsilon
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise to step(), not both")
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape,
                    generator=generator,
                    device=model_output.device,
                    dtype=model_output.dtype,
                )
            elif variance_noise.shape != model_output.shape:
                raise ValueError(
                    f"variance_noise has shape {tuple(variance_noise.shape)}, "
                    f"expected {tuple(model_output.shape)}"
                )
            prev_sample = prev_sample + sigma * variance_noise.to(prev_sample)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    @staticmethod
    def ddim_sigma(alpha_t: float, alpha_prev: float, eta: float) -> float:
        """DDIM noise level in float64 (Python floats): exact 0 direction term at ``alpha_t == 0``."""
        if eta == 0.0:
            return 0.0
        variance = (1.0 - alpha_prev) / (1.0 - alpha_t) * (1.0 - alpha_t / alpha_prev)
        return eta * math.sqrt(max(variance, 0.0))
