"""Adaptive reasoning-depth selection (docs/method.md, section 1): the one place where α acts.

For one problem with N graded self-samples, c of them correct (p = c/N), the positives are the k shortest
correct responses and each positive is paired with LONGER incorrect responses of the same problem.

- `q-dyn` (default): q = α·(1 − p), k = ⌈q·c⌉.
- `q-fix`: q = α, k = ⌈q·c⌉.
- `shortest`: k = 1.
- `q-dyn-extra-neg`: q-dyn, plus correct responses longer than `extra_neg_ratio` × the positive as extra
  negatives (the paper's ablation shows this hurts accuracy).

(our reading) k is floored at `min_positives` (default 1) when 1 ≤ c < N; `min_positives=0` is the
paper's formula taken literally. Since ⌈q·c⌉ ≥ 1 whenever q > 0, the floor only binds at q = 0 (α = 0),
where it makes q-dyn/q-fix fall back to `shortest` instead of producing no pairs at all.

Deterministic choices (ours, the paper leaves them open):
- "Longer" is strict: ℓ(rejected) > ℓ(chosen) in tokens; equal lengths never pair.
- Ties in length are broken by response index (lower index counts as shorter).
- Each positive's negatives are ordered longest first (the largest length gap first, ties by index);
  with `q-dyn-extra-neg` the incorrect negatives come before the extra correct ones.
- When a problem has more than `max_pairs` candidate pairs, pairs are taken round-robin over the
  positives (shortest positive first), each positive contributing its next negative in the order above,
  so every positive gets pairs before any positive gets many.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from tsq.data.traces import Response

if TYPE_CHECKING:  # the spec reads SELECTION_VARIANTS from here: a runtime import back would be a cycle
    from tsq.config.pipeline import SelectionSpec


@dataclass(frozen=True)
class Variant:
    """One `selection.variant`: how it sets the quantile, and which negatives it adds."""

    name: str
    quantile: Literal["none", "fixed", "dynamic"]  # k = 1 | q = α | q = α·(1 − p)
    extra_negatives: bool  # correct responses longer than extra_neg_ratio × the positive also count
    meaning: str

    @property
    def uses_alpha(self) -> bool:
        return self.quantile != "none"


SELECTION_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("shortest", "none", False, "only the shortest correct response"),
        Variant("q-fix", "fixed", False, "fixed quantile q = α"),
        Variant("q-dyn", "dynamic", False, "dynamic quantile q = α·(1 − p) (TokenSqueeze)"),
        Variant("q-dyn-extra-neg", "dynamic", True, "q-dyn + long correct responses as extra negatives"),
    )
}
DEFAULT_VARIANT = "q-dyn"
# The spec field's type: a Literal of the registry's keys, so pydantic lists them in its error
VariantName = Literal[tuple(SELECTION_VARIANTS)]  # type: ignore[valid-type]


def adaptive_quantile(p: float, alpha: float) -> float:
    """The dynamic quantile q = α·(1 − p) for correctness rate p."""
    return alpha * (1.0 - p)


def n_positives(c: int, n: int, alpha: float, variant: str, min_positives: int = 1) -> int:
    """How many of the c shortest correct responses (out of n) are positives; 0 when c = 0 or c = n."""
    if variant not in SELECTION_VARIANTS:
        raise ValueError(
            f"selection.variant: unknown variant {variant!r}; expected one of {tuple(SELECTION_VARIANTS)}"
        )
    if c == 0 or c == n:
        return 0
    rule = SELECTION_VARIANTS[variant].quantile
    if rule == "none":
        return 1
    q = alpha if rule == "fixed" else adaptive_quantile(c / n, alpha)
    # round() first guards against float noise such as 0.1 * 30 = 3.0000000000000004 -> 4
    k = math.ceil(round(q * c, 9))
    return min(c, max(min_positives, k))


# q·c within this of an integer: the rounding guard of `n_positives` may decide k there, so `k_table` asks it
_NEAR_INTEGER = 1e-6


def k_table(alpha: float, n: int, variant: str, min_positives: int = 1) -> np.ndarray:
    """`n_positives(c, n, alpha, variant, min_positives)` for c = 1 … n−1 (c = 0 and c = n give no pair), as
    an int64 array: the row of the k-table at this α, vectorised for scans over many α or n.

    Equal to the scalar rule value for value: q and q·c are the same float operations in numpy, and where q·c
    lies near an integer (where `n_positives` rounds before its ceiling) the scalar rule decides.
    """
    if variant not in SELECTION_VARIANTS:
        raise ValueError(
            f"selection.variant: unknown variant {variant!r}; expected one of {tuple(SELECTION_VARIANTS)}"
        )
    c = np.arange(1, max(n, 1), dtype=np.int64)
    rule = SELECTION_VARIANTS[variant].quantile
    if rule == "none":
        return np.ones_like(c)
    q = alpha if rule == "fixed" else alpha * (1.0 - c / n)
    qc = q * c
    k = np.ceil(qc)
    for i in np.flatnonzero(np.abs(qc - np.rint(qc)) < _NEAR_INTEGER):
        k[i] = math.ceil(round(float(qc[i]), 9))
    return np.minimum(c, np.maximum(min_positives, k)).astype(np.int64)


def select_pairs(
    lengths: Sequence[int],
    correct: Sequence[bool],
    alpha: float,
    variant: str = "q-dyn",
    max_pairs: int = 64,
    extra_neg_ratio: float = 1.5,
    min_positives: int = 1,
) -> list[tuple[int, int]]:
    """(chosen index, rejected index) pairs for one problem's responses; see the module docstring."""
    if len(lengths) != len(correct):
        raise ValueError(f"lengths ({len(lengths)}) and correct ({len(correct)}) differ in length")
    n = len(lengths)
    correct_idx = sorted((i for i in range(n) if correct[i]), key=lambda i: (lengths[i], i))
    k = n_positives(len(correct_idx), n, alpha, variant, min_positives)
    if k == 0 or max_pairs <= 0:
        return []

    def longest_first(idx: list[int]) -> list[int]:
        return sorted(idx, key=lambda i: (-lengths[i], i))

    incorrect_idx = [i for i in range(n) if not correct[i]]
    negatives: list[list[int]] = []
    for pos in correct_idx[:k]:
        negs = longest_first([j for j in incorrect_idx if lengths[j] > lengths[pos]])
        if SELECTION_VARIANTS[variant].extra_negatives:
            negs += longest_first([j for j in correct_idx if lengths[j] > extra_neg_ratio * lengths[pos]])
        negatives.append(negs)

    pairs: list[tuple[int, int]] = []
    for rank in range(max((len(negs) for negs in negatives), default=0)):
        for pos, negs in zip(correct_idx[:k], negatives, strict=True):
            if rank < len(negs):
                pairs.append((pos, negs[rank]))
                if len(pairs) == max_pairs:
                    return pairs
    return pairs


@dataclass(frozen=True)
class Pair:
    """One preference pair: the chosen (short, correct) and rejected (longer) responses to a prompt."""

    problem_id: str
    prompt: str  # the formatted prompt the responses continue
    chosen: str
    rejected: str


def build_pairs(
    samples: Mapping[str, Sequence[Response]],
    prompts: Mapping[str, str],
    alpha: float,
    selection_spec: SelectionSpec,
) -> list[Pair]:
    """All pairs over problems (sorted by problem id, so the result does not depend on dict order)."""
    pairs: list[Pair] = []
    for problem_id in sorted(samples):
        responses = samples[problem_id]
        if problem_id not in prompts:
            raise KeyError(f"no prompt for problem {problem_id!r}")
        chosen_rejected = select_pairs(
            [r.n_tokens for r in responses],
            [r.correct for r in responses],
            alpha,
            variant=selection_spec.variant,
            max_pairs=selection_spec.max_pairs,
            extra_neg_ratio=selection_spec.extra_neg_ratio,
            min_positives=selection_spec.min_positives,
        )
        for ci, ri in chosen_rejected:
            chosen, rejected = responses[ci], responses[ri]
            pairs.append(
                Pair(
                    problem_id=problem_id,
                    prompt=prompts[problem_id],
                    chosen=chosen.text,
                    rejected=rejected.text,
                )
            )
    return pairs
