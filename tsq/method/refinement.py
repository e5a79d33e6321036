"""The ε rule of intra-step refinement (docs/method.md, section 2), pure and torch-free: where ε acts.

A trace's scored rewrites (`TraceCandidates`: per step, the original and the sampled rewrites strictly shorter
than it, each with its KL D from the original) are computed and cached once per trace by
`tsq.engines.refine.compute_candidates`, independently of ε. Per trial, `refine_trace(candidates, ε)` keeps,
per step, the shortest candidate with D < ε; the original always qualifies (D = 0), so a step never gets
longer. Ties in length go to the original, then to the lower KL, then to the earlier candidate.

The choice of a step changes only where ε passes one of its candidates' KLs, so `reachable_refinements` and
`refinement_breakpoints` enumerate every refined text a range of ε gives without trying every ε.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tsq.data.tiny_world import step_meaning
from tsq.data.traces import join_steps


@dataclass(frozen=True)
class Candidate:
    text: str
    n_tokens: int
    kl: float


@dataclass(frozen=True)
class StepCandidates:
    original: str
    n_tokens: int  # tokens of the original step
    refinable: bool  # searched for rewrites (False: the answer step, or past max_steps_per_trace)
    candidates: tuple[Candidate, ...] = ()  # rewrites strictly shorter than the original, with their KL


@dataclass(frozen=True)
class TraceCandidates:
    """A trace as `head + join_steps(steps) + tail`, with the scored rewrites of each step."""

    head: str
    steps: tuple[StepCandidates, ...]
    tail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceCandidates:
        steps = tuple(
            StepCandidates(
                original=s["original"],
                n_tokens=s["n_tokens"],
                refinable=s["refinable"],
                candidates=tuple(Candidate(**c) for c in s["candidates"]),
            )
            for s in data["steps"]
        )
        return cls(head=data["head"], steps=steps, tail=data["tail"])


@dataclass(frozen=True)
class RefinedTrace:
    text: str
    tokens_before: tuple[int, ...]  # per step
    tokens_after: tuple[int, ...]
    n_rewritten: int  # steps replaced by a shorter candidate

    @property
    def n_steps(self) -> int:
        return len(self.tokens_before)


def refine_step(step: StepCandidates, epsilon: float) -> tuple[str, int]:
    """(text, tokens) of the shortest candidate with KL < ε (ties: the original, then the lower KL, then
    order); the original step when none qualifies."""
    best = (step.n_tokens, 0.0, -1, step.original)
    for idx, cand in enumerate(step.candidates):
        if cand.kl < epsilon:
            best = min(best, (cand.n_tokens, cand.kl, idx, cand.text))
    return best[3], best[0]


def refine_trace(cands: TraceCandidates, epsilon: float) -> RefinedTrace:
    """Every step refined by `refine_step`."""
    chosen = [refine_step(step, epsilon) for step in cands.steps]
    return RefinedTrace(
        text=cands.head + join_steps([text for text, _ in chosen]) + cands.tail,
        tokens_before=tuple(s.n_tokens for s in cands.steps),
        tokens_after=tuple(n for _, n in chosen),
        n_rewritten=sum(text != s.original for (text, _), s in zip(chosen, cands.steps, strict=True)),
    )


def reachable_refinements(cands: TraceCandidates, low: float, high: float) -> list[str]:
    """Every distinct refined text `refine_trace` gives for some ε in [low, high], in order of ε.

    The choice changes only where ε passes a candidate's KL (the rule is KL < ε), so ε = low and the
    smallest ε above each KL in [low, high) reach them all.
    """
    kls = sorted({c.kl for s in cands.steps for c in s.candidates if low <= c.kl < high})
    texts = [refine_trace(cands, e).text for e in (low, *(math.nextafter(k, math.inf) for k in kls))]
    return list(dict.fromkeys(texts))


def refinement_breakpoints(cands: TraceCandidates, low: float, high: float) -> set[float]:
    """The ε in (low, high] at which `refine_trace` changes this trace's text (rule: KL < ε)."""
    kls = sorted({c.kl for s in cands.steps for c in s.candidates if low <= c.kl < high})
    points: set[float] = set()
    text = refine_trace(cands, low).text
    for kl in kls:
        eps = math.nextafter(kl, math.inf)
        new = refine_trace(cands, eps).text
        if new != text:
            points.add(eps)
            text = new
    return points


def _same_meaning(step: StepCandidates) -> StepCandidates:
    meaning = step_meaning(step.original)
    return dataclasses.replace(
        step, candidates=tuple(c for c in step.candidates if step_meaning(c.text) == meaning)
    )


# Which scored rewrites a step may take (`refinement.candidates`), before the ε rule. "all": the paper's rule.
# "same-meaning": only rewrites that state what the original step states (tsq.data.tiny_world.step_meaning: a
# tiny-world reading, so a diagnostic of that world; it tells the gain of shorter phrasing from that of
# value changes the windowed KL cannot see, docs/tiny-world.md). The order, and so the tie rules, are kept.
CandidateFilter = Literal["all", "same-meaning"]
CANDIDATE_FILTERS: dict[CandidateFilter, Callable[[StepCandidates], StepCandidates] | None] = {
    "all": None,
    "same-meaning": _same_meaning,
}


def restrict(cands: TraceCandidates, rule: CandidateFilter) -> TraceCandidates:
    """The trace's candidates that `rule` (a key of CANDIDATE_FILTERS) lets the ε rule choose from."""
    keep = CANDIDATE_FILTERS[rule]
    return cands if keep is None else dataclasses.replace(cands, steps=tuple(keep(s) for s in cands.steps))
