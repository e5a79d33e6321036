"""Simulated staged evaluations for the early stop (tsq/method/early_stop.py), shared by
tests/test_early_stop.py
and benchmarks/bench_early_stop.py --per-study: a tiny-world-like eval set (half easy problems at 95%, half
anywhere in 20–80%), a baseline and trials drawn from it, every trial evaluated in stages by `run_stages`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tsq.method.early_stop import run_stages, stage_problems
from tsq.method.metrics import SUM_FIELDS, ProblemSums

BUDGET = 128
STAGES = (0.25, 0.5, 1.0)


def sums_of(ids: Sequence[str], correct: Sequence[int], n: int) -> ProblemSums:
    """Per-problem sums with `correct[i]` of `n` responses right on problem ids[i] (ids sorted)."""
    rows = np.zeros((len(ids), len(SUM_FIELDS)))
    rows[:, SUM_FIELDS.index("responses")] = n
    rows[:, SUM_FIELDS.index("correct")] = correct
    order = np.argsort(ids)
    return ProblemSums(tuple(ids[i] for i in order), rows[order], BUDGET)


class World:
    """One study: its problems' true accuracies and its one baseline evaluation (`n_base` samples each)."""

    def __init__(self, rng: np.random.Generator, m: int = 100, n: int = 8, n_base: int | None = None):
        self.m, self.n = m, n
        self.p = np.where(rng.random(m) < 0.5, 0.95, rng.uniform(0.2, 0.8, m))
        self.ids = [f"p{i:03d}" for i in range(m)]
        self.index = {pid: i for i, pid in enumerate(self.ids)}
        n_base = n_base or n
        self.base = sums_of(self.ids, rng.binomial(n_base, self.p), n_base)

    def stopped_at(
        self, rng: np.random.Generator, change: float, order_seed: int, *, concentrated: bool = False
    ) -> int:
        """The stage a trial whose true accuracy change is `change` is stopped at (0: not stopped), its
        responses drawn anew. `concentrated`: a quarter of the problems carry the whole change (×4)."""
        shift = (
            np.where(rng.random(self.m) < 0.25, 4 * change, 0.0) if concentrated else np.full(self.m, change)
        )
        correct = rng.binomial(self.n, np.clip(self.p + shift, 0, 1))
        looks = run_stages(
            self.base,
            stage_problems(self.ids, STAGES, order_seed),
            lambda added: sums_of(list(added), [correct[self.index[a]] for a in added], self.n),
            max_accuracy_drop=0.05,
        )
        return looks[-1].stage if looks[-1].stop else 0


def simulate(seed: int, change: float, *, concentrated: bool = False) -> int:
    """A trial in a study of its own (a fresh world and baseline): the stage it is stopped at (0: not)."""
    rng = np.random.default_rng(seed)
    return World(rng).stopped_at(rng, change, seed, concentrated=concentrated)


def per_study_false_stops(studies: int, trials: int, seed: int = 0, n_base: int | None = None) -> np.ndarray:
    """For each of `studies` simulated studies (one world, one baseline draw each), the share of `trials`
    trials exactly at the boundary (true change −δ, δ 5 points) that are stopped: its false-stop rate."""
    rates = np.empty(studies)
    for s in range(studies):
        rng = np.random.default_rng([seed, s])
        world = World(rng, n_base=n_base)
        rates[s] = np.mean([world.stopped_at(rng, -0.05, s) > 0 for _ in range(trials)])
    return rates
