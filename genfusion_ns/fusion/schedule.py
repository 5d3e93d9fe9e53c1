"""When repair rounds happen and how much repaired views weigh (the authors' cycle scheduler, reference §3.2)."""

from __future__ import annotations

import math


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
