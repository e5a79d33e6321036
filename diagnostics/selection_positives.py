"""What each selection variant trains on, per depth: the positives and negatives `shortest` and q-dyn pick.

Reads a spec's cached self-samples (`objectives.tokensqueeze.check.load_cached_inputs`: it never generates; a
cache miss
stops the script), forms each variant's pairs with `tsq.method.select.select_pairs` exactly as a trial does
(`build_pairs`, with the spec's `selection` settings and its fixed α), and prints per difficulty level
(tiny world: chain depth) and variant:

- problems with at least one pair, pairs, distinct positives, and the share of all the variant's pairs that
  come from the level;
- the positives' mean tokens, share that verify (`tiny_world.has_verification`), share of long-phrased steps
  among their phrased steps (compute, answer and restatement steps; see `phrasing`), share that restate the
  question, share that carry a repaired slip (a step whose value was wrong, then set right by a check:
  `tiny_world_errors.checks_after_slips`, so imitating the positive also imitates the slip); the share of
  pairs whose chosen side verifies, and of pairs where exactly one side verifies
  (+V: only the chosen one, the pair rewards checking; -V: only the rejected one, the pair penalises it);
- the distinct negatives' mean tokens and share that verify.

A third row per level, `q-dyn+`, holds the positives q-dyn adds to shortest's (shortest's positive is always
one of q-dyn's: the k shortest correct responses include the shortest). Last, the base model's self-samples
per level: accuracy of all samples, of verifying vs non-verifying ones, and of long-majority vs
short-majority ones (more long than short phrased steps, or fewer; ties counted apart), plus the long-minus-
short accuracy gap within verifying and within non-verifying samples, so phrasing is not read through
verification. Accuracies are over samples; samples of one problem are not independent, so read small gaps
(a few points on a few hundred samples) as noise.

    mkdir -p /tmp/tsqhome-x && cp -r ~/.cache/tsq/engines/models ~/.cache/tsq/cache /tmp/tsqhome-x/
    TSQ_HOME=/tmp/tsqhome-x OMP_NUM_THREADS=1 .venv/bin/python diagnostics/selection_positives.py \\
        sweeps/paper-ablations-selection.yaml [--variants shortest q-dyn]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tiny_world_errors import checks_after_slips, true_chain  # a sibling diagnostic (scripts run from here)

from objectives.tokensqueeze.check import knob_values, load_cached_inputs
from tsq.cache import Cache, cache_dir_of
from tsq.config.spec import Spec
from tsq.data.loading import load_problem_set
from tsq.data.tiny_world import has_verification, step_meaning
from tsq.data.traces import Response, split_steps
from tsq.method.select import select_pairs
from tsq.recipe import load_spec

# The first word of each long phrasing the tiny world writes (tiny_world._compute_step: "now we work out",
# "next we want"; the answer's "so c is ..."; the restatement's "first we have"); the short forms start with
# the variable, "answer" and "start". The world has no phrasing predicate of its own, only step_meaning.
LONG_OPENERS = frozenset({"now", "next", "so", "first"})
PHRASED_KINDS = frozenset({"compute", "answer", "restate"})  # check steps have one phrasing only


def phrasing(text: str) -> tuple[int, int]:
    """(long-phrased steps, phrased steps) of a response; steps the world never writes are not counted."""
    n_long = n_phrased = 0
    for step in split_steps(text):
        if step_meaning(step)[0] in PHRASED_KINDS:
            n_phrased += 1
            n_long += step.split()[0] in LONG_OPENERS
    return n_long, n_phrased


def restates(text: str) -> bool:
    return any(step_meaning(step)[0] == "restate" for step in split_steps(text))


@dataclass
class Group:
    """Responses pooled for one table cell."""

    n: int = 0
    tokens: int = 0
    verify: int = 0
    restate: int = 0
    long_steps: int = 0
    phrased_steps: int = 0
    repaired: int = 0

    def add(self, r: Response, values: Sequence[int]) -> None:
        n_long, n_phrased = phrasing(r.text)
        self.repaired += any(outcome == "fixed" for _, outcome in checks_after_slips(r.text, list(values)))
        self.n += 1
        self.tokens += r.n_tokens
        self.verify += has_verification(r.text)
        self.restate += restates(r.text)
        self.long_steps += n_long
        self.phrased_steps += n_phrased

    def cells(self, full: bool) -> str:
        if self.n == 0:
            return f"{0:>4} {'-':>5} {'-':>5}" + (f" {'-':>5} {'-':>5} {'-':>5}" if full else "")
        out = f"{self.n:>4} {self.tokens / self.n:>5.1f} {pct(self.verify, self.n):>5}"
        if full:
            out += f" {pct(self.long_steps, self.phrased_steps):>5} {pct(self.restate, self.n):>5}"
            out += f" {pct(self.repaired, self.n):>5}"
        return out


def pct(num: int, den: int) -> str:
    return "-" if den == 0 else f"{100 * num / den:.0f}%"


def acc(rs: Sequence[Response]) -> str:
    return f"{len(rs):>6} {pct(sum(r.correct for r in rs), len(rs)):>5}"


def majority(r: Response) -> int:
    """1 when most phrased steps are long, -1 when most are short, 0 on a tie."""
    n_long, n_phrased = phrasing(r.text)
    return (2 * n_long > n_phrased) - (2 * n_long < n_phrased)


def gap(a: Sequence[Response], b: Sequence[Response]) -> str:
    """Accuracy of a minus accuracy of b, in points."""
    if not a or not b:
        return f"{'-':>6}"
    return f"{100 * (sum(r.correct for r in a) / len(a) - sum(r.correct for r in b) / len(b)):>+6.1f}"


def variant_pairs(spec: Spec, rs: Sequence[Response], alpha: float, variant: str) -> list[tuple[int, int]]:
    sel = spec.selection
    return select_pairs(
        [r.n_tokens for r in rs],
        [r.correct for r in rs],
        alpha,
        variant=variant,
        max_pairs=sel.max_pairs,
        extra_neg_ratio=sel.extra_neg_ratio,
        min_positives=sel.min_positives,
    )


def the_alpha(spec: Spec) -> float:
    alphas = {float(a) for a in knob_values(spec, "alpha")}
    if len(alphas) != 1:
        sys.exit(f"{spec.name}: α is searched over a range; this script reads a spec with one α")
    return alphas.pop()


def pair_tables(
    spec: Spec,
    samples: Mapping[str, list[Response]],
    depth: Mapping[str, int],
    values: Mapping[str, Sequence[int]],
    variants: Iterable[str],
) -> None:
    alpha = the_alpha(spec)
    levels = sorted(set(depth.values()))
    pairs = {
        v: {pid: variant_pairs(spec, rs, alpha, v) for pid, rs in sorted(samples.items())} for v in variants
    }
    totals = {v: sum(len(p) for p in ps.values()) for v, ps in pairs.items()}
    print(
        f"{spec.name}: α {alpha}, N {spec.sampling.n}, max_pairs {spec.selection.max_pairs}, "
        f"{len(samples)} train problems; pairs per variant: "
        + ", ".join(f"{v} {t}" for v, t in totals.items())
    )
    print("positives: n = distinct positives; tok = mean tokens; ver = share verifying; long = share of")
    print("long-phrased steps among phrased steps; rest = share restating; fix = share carrying a slip that")
    print("a check repaired; negatives: distinct rejected ones")
    head = (
        f"{'depth':<5} {'variant':<9} {'probs':>5} {'pairs':>5} {'share':>5} | "
        f"{'pos n':>4} {'tok':>5} {'ver':>5} {'long':>5} {'rest':>5} {'fix':>5} | "
        f"{'ver/pr':>6} {'+V':>4} {'-V':>4} | {'neg n':>4} {'tok':>5} {'ver':>5}"
    )
    print(head)
    print("-" * len(head))
    for level in levels:
        pids = [pid for pid in sorted(samples) if depth[pid] == level]
        positives: dict[str, set[tuple[str, int]]] = {}
        for v, ps in pairs.items():
            pos_keys = {(pid, ci) for pid in pids for ci, _ in ps[pid]}
            positives[v] = pos_keys
            level_pairs = [(pid, ci, ri) for pid in pids for ci, ri in ps[pid]]
            pos, neg = Group(), Group()
            for pid, ci in sorted(pos_keys):
                pos.add(samples[pid][ci], values[pid])
            for pid, ri in sorted({(pid, ri) for pid, _, ri in level_pairs}):
                neg.add(samples[pid][ri], values[pid])
            ver_c = [has_verification(samples[pid][ci].text) for pid, ci, _ in level_pairs]
            ver_r = [has_verification(samples[pid][ri].text) for pid, _, ri in level_pairs]
            plus = sum(c and not r for c, r in zip(ver_c, ver_r, strict=True))
            minus = sum(r and not c for c, r in zip(ver_c, ver_r, strict=True))
            n_pairs = len(level_pairs)
            print(
                f"{level:<5} {v:<9} {sum(bool(ps[pid]) for pid in pids):>5} {n_pairs:>5} "
                f"{pct(n_pairs, totals[v]):>5} | {pos.cells(True)} | "
                f"{pct(sum(ver_c), n_pairs):>6} {pct(plus, n_pairs):>4} {pct(minus, n_pairs):>4} | "
                f"{neg.cells(False)}"
            )
        if "shortest" in positives and "q-dyn" in positives:
            extra = Group()
            for pid, ci in sorted(positives["q-dyn"] - positives["shortest"]):
                extra.add(samples[pid][ci], values[pid])
            print(f"{level:<5} {'q-dyn+':<9} {'':>5} {'':>5} {'':>5} | {extra.cells(True)} |")
        print()


def sample_table(samples: Mapping[str, list[Response]], depth: Mapping[str, int]) -> None:
    print("base self-samples per depth: n and accuracy of each group; Δ = long-majority minus short-majority")
    print("accuracy within verifying (Δ ver) and within non-verifying (Δ nover) samples, in points")
    head = (
        f"{'depth':<5} {'all n':>6} {'acc':>5} {'0<c<N':>7} | {'ver n':>6} {'acc':>5} {'nov n':>6} "
        f"{'acc':>5} | {'long n':>6} {'acc':>5} {'shrt n':>6} {'acc':>5} {'tie n':>5} | {'Δ ver':>6} "
        f"{'Δ nover':>7}"
    )
    print(head)
    print("-" * len(head))
    for level in sorted(set(depth.values())):
        pids = [pid for pid in samples if depth[pid] == level]
        rs = [r for pid in pids for r in samples[pid]]
        mixed = sum(0 < sum(r.correct for r in samples[pid]) < len(samples[pid]) for pid in pids)

        ver = [r for r in rs if has_verification(r.text)]
        nover = [r for r in rs if not has_verification(r.text)]
        long_ = [r for r in rs if majority(r) == 1]
        short = [r for r in rs if majority(r) == -1]
        ties = sum(majority(r) == 0 for r in rs)
        d_ver = gap([r for r in ver if majority(r) == 1], [r for r in ver if majority(r) == -1])
        d_nover = gap([r for r in nover if majority(r) == 1], [r for r in nover if majority(r) == -1])
        print(
            f"{level:<5} {acc(rs)} {f'{mixed}/{len(pids)}':>7} | {acc(ver)} {acc(nover)} | "
            f"{acc(long_)} {acc(short)} {ties:>5} | {d_ver} {d_nover:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--variants", nargs="+", default=["shortest", "q-dyn"])
    args = parser.parse_args()
    spec = load_spec(args.spec)
    inputs = load_cached_inputs(spec, Cache(cache_dir_of(spec.cache_dir)))
    if inputs.samples is None:
        sys.exit(f"cache miss (nothing generated): {inputs.why_not}")
    problems = load_problem_set(spec.data, "train").problems
    depth = {p.id: int(p.difficulty or 0) for p in problems if p.id in inputs.samples}
    values = {p.id: true_chain(p.question)[0] for p in problems if p.id in inputs.samples}
    pair_tables(spec, inputs.samples, depth, values, args.variants)
    sample_table(inputs.samples, depth)


if __name__ == "__main__":
    main()
