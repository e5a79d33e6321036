"""The plan of TokenSqueeze's study-wide cache, pure: which traces any trial of the study can train on.

A trial thresholds cached step candidates at its own ε and reads cached reference log-probs; both are
computed once, by the first trial (or `tsq cache warm`), for the covering set below, and `tsq sweep check`
looks the same set up in the cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from objectives.tokensqueeze.config import TokenSqueezeSpec
from tsq.data.traces import Response
from tsq.method.select import Pair, build_pairs
from tsq.recipe import StudyScope


def covering_pairs(
    spec: TokenSqueezeSpec,
    samples: Mapping[str, Sequence[Response]],
    prompts: Mapping[str, str],
    alpha: float,
    scope: StudyScope,
) -> list[Pair]:
    """Pairs at the largest α (and every selection variant) the study can propose.

    Positives only grow with α (same length order, k non-decreasing) and shortest ⊆ q-dyn ⊆ q-fix, so
    step candidates computed for these chosen traces serve every later trial: a trial thresholds cached
    candidates at its own ε and never generates new ones.
    """
    bound = scope.extent("alpha", alpha)[1]
    variants = scope.values("selection_variant", spec.selection.variant)
    return [
        pair
        for variant in sorted(variants)
        for pair in build_pairs(
            samples, prompts, bound, spec.selection.model_copy(update={"variant": variant})
        )
    ]


def reference_cover(
    cover: Sequence[Pair],
    reachable: dict[tuple[str, str], list[str]],
    samples: Mapping[str, Sequence[Response]],
) -> list[Pair]:
    """Pairs that hold every sequence a trial of the study can train on, for the reference pass.

    Chosen side: each covering positive in every refinement some ε of the study reaches. Rejected side:
    every sampled response of the covered problems (each selection variant draws its negatives there).
    Reference log-probs are cached per sequence, so the pairing is arbitrary: each distinct sequence is
    put in one pair, two to a pair.
    """
    chosen: dict[str, tuple[str, list[str]]] = {}
    for p in cover:
        texts = chosen.setdefault(p.problem_id, (p.prompt, []))[1]
        texts.extend(t for t in reachable[p.prompt, p.chosen] if t not in texts)
    out = []
    for problem_id, (prompt, texts) in chosen.items():
        sequences = list(dict.fromkeys([*texts, *(r.text for r in samples[problem_id])]))
        for i in range(0, len(sequences), 2):
            second = sequences[i + 1] if i + 1 < len(sequences) else sequences[0]
            out.append(Pair(problem_id, prompt, sequences[i], second))
    return out
