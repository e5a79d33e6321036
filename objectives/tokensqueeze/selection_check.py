"""`tsq sweep check`'s selection pre-flight: can the base model's self-samples give TokenSqueeze any pairs?

A pair needs a problem with both a correct and an incorrect sample (the incorrect one longer than the
shortest correct one): a problem the model always solves, or never does, gives none (tsq.method.select). A
base model too weak for the problems, or cut off by too few tokens, leaves every trial without pairs, and each
one fails (TrialFailed). The pre-flight reads the self-samples a trial or `tsq cache warm` left in the cache
and counts; before any exist it says it cannot tell yet and how to find out.

`summarize` is pure (tests/test_check.py checks it against hand counts); `selection_preflight` only reads
the cache, through `objectives.tokensqueeze.check.load_cached_inputs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from objectives.tokensqueeze.check import CachedInputs, knob_values, pair_set

if TYPE_CHECKING:
    from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
    from tsq.data.traces import Response

# Below this share of train problems with pairs, trials train on a handful of problems: said, as a warning.
FEW_PAIRED_SHARE = 0.1


@dataclass(frozen=True)
class SelectionPreflight:
    """Counts over the cached self-samples of the train split (all None when none are cached)."""

    n_problems: int | None = None
    n_samples: int | None = None  # per problem (sampling.n)
    n_correct: int | None = None  # correct samples, over all problems
    n_truncated: int | None = None  # samples cut off at sampling.max_new_tokens
    n_mixed: int | None = None  # problems with a correct and an incorrect sample
    n_paired: int | None = None  # problems that give pairs at the study's largest α
    n_pairs: int | None = None  # pairs at that α, of the study's variant that pairs the most
    alpha: float | None = None
    why_not: str = ""  # why nothing is counted

    @property
    def accuracy(self) -> float | None:
        if self.n_correct is None or not self.n_problems or not self.n_samples:
            return None
        return self.n_correct / (self.n_problems * self.n_samples)

    @property
    def too_few(self) -> bool:
        return self.n_paired is not None and self.n_paired < max(1, FEW_PAIRED_SHARE * (self.n_problems or 0))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "too_few": self.too_few}

    def lines(self, spec_path: str, max_new_tokens: int) -> list[str]:
        if self.n_problems is None:
            return [
                "selection: cannot tell yet whether the base model's self-samples give pairs "
                f"({self.why_not}); to find out, sample the train split: tsq cache warm {spec_path} (or run "
                "one trial), then check again"
            ]
        assert self.accuracy is not None and self.n_samples is not None
        head = (
            f"selection: base model {100 * self.accuracy:.1f}% correct on the train split "
            f"({self.n_correct} of {self.n_problems} × {self.n_samples} cached samples, "
            f"{self.n_truncated} cut off at {max_new_tokens} tokens); {self.n_mixed} of {self.n_problems} "
            f"problems have both a correct and an incorrect sample, {self.n_paired} give pairs "
            f"({self.n_pairs} at α = {self.alpha:g})"
        )
        if not self.too_few:
            return [head]
        verdict = (
            "no trial can form pairs: every one fails (TrialFailed)"
            if not self.n_pairs
            else f"trials train on pairs from only {self.n_paired} problems"
        )
        cut = f", {self.n_truncated} were cut off" if self.n_truncated else ""
        return [
            head,
            f"  warning: too few problems give pairs: {verdict}; give the model problems it solves some of "
            f"the time: more samples per problem (sampling.n, now {self.n_samples}), easier problems "
            f"(data), or more tokens (sampling.max_new_tokens, now {max_new_tokens}{cut})",
        ]


def summarize(
    samples: Mapping[str, Sequence[Response]], spec: Spec, alpha: float | None = None
) -> SelectionPreflight:
    """Count the pre-flight's figures over graded samples, at `alpha` (default: the study's largest α)."""
    top = alpha if alpha is not None else max(float(a) for a in knob_values(spec, "alpha"))
    # the variant of the study that pairs the most (a searched selection_variant gives several)
    paired, n_pairs = max(
        (sum(bool(p) for _, p in sets), sum(len(p) for _, p in sets))
        for sets in (
            pair_set(samples, top, spec.selection, str(v)) for v in knob_values(spec, "selection_variant")
        )
    )
    responses = [r for rs in samples.values() for r in rs]
    return SelectionPreflight(
        n_problems=len(samples),
        n_samples=max((len(rs) for rs in samples.values()), default=0),
        n_correct=sum(r.correct for r in responses),
        n_truncated=sum(r.finish_reason == "length" for r in responses),
        n_mixed=sum(any(r.correct for r in rs) and not all(r.correct for r in rs) for rs in samples.values()),
        n_paired=paired,
        n_pairs=n_pairs,
        alpha=top,
    )


def selection_preflight(spec: Spec, inputs: CachedInputs) -> SelectionPreflight:
    """The pre-flight on the spec's cached self-samples (through `check.load_cached_inputs`)."""
    if inputs.samples is None:
        return SelectionPreflight(why_not=inputs.why_not)
    return summarize(inputs.samples, spec)
