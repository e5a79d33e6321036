"""The configuration a study recommends training with, and the rule that chose it.

The rule (docs/sweeps.md, "What to train with"):
1. Feasible with high probability: the trial's accuracy change against the baseline has its whole 95% interval
   above −max_accuracy_drop (the study's constraint, which is also the equivalence margin `tsq report effects`
   uses for accuracy): not worse than the baseline beyond the margin. Without replicates that is the report's
   own bootstrap interval (evaluation noise); once the study has fresh-seed replicates, the pooled
   between-seed SD of accuracy (`pooled_seed_noise`) adds to each unreplicated trial's bootstrap SE (a t
   interval at the Welch–Satterthwaite df), and a replicated trial is judged by the mean over its fresh seeds
   only, the winner's curse kept out. A trial stopped early is never a candidate.
2. Among those, the most compressed: the best value of the study's first objective that is not accuracy.
3. The trials feasible with high probability whose gap to it in that objective is within 2 SE of the gap
   (the threshold `front_spread` uses; seed noise adds 2·SD² to the SE once measured) are not separable
   from it: they are named with it, as equally good choices.
When no trial is feasible with high probability, the most compressed trial feasible at its point value is
named as provisional.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tsq.method.metrics import metric
from tsq.method.stats import aggregate_replicates

Feasibility = Literal["yes", "unsure", "no", "stopped"]
FEASIBILITY_TEXT: dict[str, str] = {
    "yes": "yes",  # the whole interval above the limit
    "unsure": "unsure",  # the point above, the interval crossing it
    "no": "no",  # the point below: Optuna's infeasible
    "stopped": "no (stopped early)",
}
SEPARATION_SE = 2.0  # gaps within this many SEs are noise (as `tsq.method.stats.front_spread`)


@dataclass(frozen=True)
class Candidate:
    """What the rule needs of one trial (`tsq.report.table.Row`, reduced)."""

    number: int
    params: dict[str, object]
    compression: float | None  # the compression objective's value
    delta: float | None  # accuracy change against the baseline (a fraction)
    delta_se: float | None  # its problem-bootstrap SE
    stopped: bool = False
    replicate_delta: tuple[float, float, float, int] | None = None  # fresh seeds: (mean, lo, hi, n)
    delta_interval: tuple[float, float] | None = None  # its 95% bootstrap interval, as the table shows it


@dataclass(frozen=True)
class Judged:
    """One trial's accuracy change with the interval the rule judged, and the verdict."""

    number: int
    delta: float | None
    lo: float | None
    hi: float | None
    feasible: Feasibility
    seeds: int  # fresh seeds behind the value (0: the sweep's run, seed noise from the pooled SD if any)


@dataclass(frozen=True)
class Recommendation:
    max_accuracy_drop: float | None
    metric: str | None  # the compression objective
    judged: dict[int, Judged]
    pick: int | None
    tied: list[int]  # feasible with high probability and not separable from the pick in `metric`
    provisional: bool  # no trial is feasible with high probability: the pick is feasible at its point only
    seed_noise: bool  # the intervals hold seed noise
    reason: str | None = None  # why there is no pick


def compression_objective(objectives: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """The study's first objective that is not accuracy (nor its change): what "most compressed" means."""
    for name, direction in objectives:
        if "accuracy" not in (name, metric(name).of):
            return name, direction
    return None


def judge(
    candidate: Candidate,
    max_accuracy_drop: float,
    seed_sd: float | None = None,
    seed_dof: int | None = None,
) -> Judged:
    """The verdict on one trial's feasibility, from its accuracy change's 95% interval (module docstring)."""
    if candidate.stopped:
        return Judged(candidate.number, candidate.delta, None, None, "stopped", 0)
    if candidate.replicate_delta is not None:
        mean, lo, hi, n = candidate.replicate_delta
        value, low, high, seeds = mean, lo, hi, n
    elif candidate.delta is None:
        return Judged(candidate.number, None, None, None, "no", 0)
    elif seed_sd is None and candidate.delta_interval is not None:  # evaluation noise only: the table's own
        (low, high), value, seeds = candidate.delta_interval, candidate.delta, 0
    else:
        est = aggregate_replicates(
            [candidate.delta], se_boot=candidate.delta_se, sd_seed=seed_sd, sd_dof=seed_dof
        )
        value, low, high, seeds = candidate.delta, est.lo, est.hi, 0
    limit = -max_accuracy_drop - 1e-12  # a trial exactly at the limit is feasible, as Optuna has it
    if value < limit:
        verdict: Feasibility = "no"
    elif low is not None and low >= limit:
        verdict = "yes"
    else:
        verdict = "unsure"
    return Judged(candidate.number, value, low, high, verdict, seeds)


def recommend(
    candidates: Sequence[Candidate],
    objectives: Sequence[tuple[str, str]],
    max_accuracy_drop: float | None,
    gap_of: Callable[[int, int], tuple[float, float] | None],
    seed_sd: float | None = None,
    seed_dof: int | None = None,
) -> Recommendation:
    """The rule of the module docstring. `gap_of(a, b)`: the gap between trials a and b in the compression
    objective and its SE (`tsq.method.stats.front_spread`), None when it cannot be measured."""
    target = compression_objective(objectives)
    noise = seed_sd is not None or any(c.replicate_delta for c in candidates)
    if max_accuracy_drop is None:
        return Recommendation(None, target and target[0], {}, None, [], False, noise,
                              "the study sets no constraint (study.constraint.max_accuracy_drop), so nothing "
                              "says how much accuracy may be traded")  # fmt: skip
    judged = {c.number: judge(c, max_accuracy_drop, seed_sd, seed_dof) for c in candidates}
    if target is None:
        return Recommendation(max_accuracy_drop, None, judged, None, [], False, noise,
                              "the study has no objective besides accuracy to compress")  # fmt: skip
    name, direction = target
    sign = 1.0 if direction == "minimize" else -1.0
    values = {c.number: c.compression for c in candidates if c.compression is not None}

    def most_compressed(numbers: list[int]) -> int:
        return min(numbers, key=lambda n: (sign * values[n], n))

    sure = [n for n, j in judged.items() if j.feasible == "yes" and n in values]
    point = [n for n, j in judged.items() if j.feasible == "unsure" and n in values]
    if not sure and not point:
        return Recommendation(max_accuracy_drop, name, judged, None, [], False, noise,
                              "no trial is feasible, even at its point value")  # fmt: skip
    pick = most_compressed(sure or point)
    tied = [n for n in (sure or point) if n != pick and not _separated(gap_of(pick, n))]
    return Recommendation(max_accuracy_drop, name, judged, pick, sorted(tied, key=lambda n: sign * values[n]),
                          not sure, noise)  # fmt: skip


def _separated(found: tuple[float, float] | None) -> bool:
    """Whether a (gap, SE) is beyond `SEPARATION_SE` of its SE (unknown: not separated)."""
    if found is None:
        return False
    gap, se = found
    return abs(gap) > SEPARATION_SE * se if se > 0 else gap != 0


def fragment(params: Mapping[str, object]) -> str:
    """The knobs as a spec fragment (`params:` of a sweep spec), every value exact."""
    return "params: {" + ", ".join(f"{k}: {_exact(v)}" for k, v in sorted(params.items())) + "}"


def trial_command(spec: str, params: Mapping[str, object]) -> str:
    """`tsq trial run` with the trial's knobs, each as `--set NAME=VALUE`."""
    given = " ".join(f"--set {k}={_exact(v)}" for k, v in sorted(params.items()))
    return f"tsq trial run {spec} {given} --out runs/recommended".replace("  ", " ")


def _exact(value: object) -> str:
    return repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
