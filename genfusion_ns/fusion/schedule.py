"""When repair rounds happen and how much repaired views weigh (the authors' cycle scheduler, reference §3.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


def repair_round_steps(start: int, every: int, until: int, max_steps: int) -> list[int]:
    """Steps at which a repair round runs: ``start, start + every, ...`` strictly before ``until`` and before the
    last training step (a round at the very end would never be trained on)."""
    if every <= 0:
        raise ValueError(f"fusion_every must be positive, got {every}.")
    last = min(until, max_steps)
    return list(range(start, last, every))


def repaired_view_weight(step: int, start: int, until: int, lambda_reg: float) -> float:
    """``lambda_reg * sin(pi * (step - start) / (until - start))`` inside ``(start, until)``, else 0.

    The weight rises from 0 at the first round to ``lambda_reg`` half-way and falls back to 0 at ``until``, so early
    (blurry) repairs and the final steps lean on the real views.
    """
    if until <= start or not start < step < until:
        return 0.0
    return lambda_reg * math.sin(math.pi * (step - start) / (until - start))


@dataclass(frozen=True)
class FusionSchedule:
    """Absolute steps of the cycle: the first round, the spacing of rounds, and the end of the repaired-view weight."""

    start: int
    every: int
    until: int

    def round_steps(self, max_steps: int) -> list[int]:
        return repair_round_steps(self.start, self.every, self.until, max_steps)

    def weight(self, step: int, lambda_reg: float) -> float:
        return repaired_view_weight(step, self.start, self.until, lambda_reg)


def resolve_schedule(max_steps: int, start_fraction: float, every_fraction: float, until_fraction: float,
                     start: Optional[int] = None, every: Optional[int] = None,
                     until: Optional[int] = None) -> FusionSchedule:
    """The schedule of a ``max_steps`` run: each of ``start`` / ``every`` / ``until`` given in steps wins, the others
    are their fraction of ``max_steps`` -- so ``--max-num-iterations`` moves the rounds with the training."""
    for name, fraction in (("start", start_fraction), ("every", every_fraction), ("until", until_fraction)):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"--pipeline.fusion-{name}-fraction must be in (0, 1], got {fraction}.")
    resolved = FusionSchedule(
        start=start if start is not None else max(1, round(start_fraction * max_steps)),
        every=every if every is not None else max(1, round(every_fraction * max_steps)),
        until=until if until is not None else max(1, round(until_fraction * max_steps)),
    )
    if resolved.every <= 0 or resolved.start < 0:
        raise ValueError(f"--pipeline.fusion-every must be positive and --pipeline.fusion-start >= 0, got {resolved}.")
    return resolved
