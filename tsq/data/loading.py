"""Load a spec's problem split from its source: the tiny world or an HF-datasets source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tsq.data.problems import ProblemSet
from tsq.data.sources import hf_problem_set
from tsq.data.tiny_world import tiny_problem_set
from tsq.errors import UserError

if TYPE_CHECKING:  # the spec sits above the data layer; this module only reads its fields
    from tsq.config.spec import DataSpec


Split = Literal["train", "eval", "test"]


def load_problem_set(data: DataSpec, split: Split) -> ProblemSet:
    """The train, eval or held-out test problems of a spec's `data:` section: the tiny world, or an
    HF-datasets source. The three are disjoint; `test` is only for `tsq sweep confirm --split test`."""
    subset = getattr(data, split)
    if subset is None:
        raise UserError(f"data.{split}: this spec has no held-out split; add one, e.g. test: {{n: 100}}")
    if data.source != "tiny":
        return hf_problem_set(data, split)
    if subset.n is None or subset.ids is not None:
        raise UserError(f"data.{split}: the tiny world takes a count n (ids and all-problems need a dataset)")
    if split != "test":
        return tiny_problem_set(split, subset.n, data.seed, data.min_steps, data.max_steps)
    # The tiny world's held-out problems continue the eval split's own draw past data.eval.n: disjoint from
    # eval (and, by the question hash, from train), and the eval problems stay exactly as they are.
    n_eval = data.eval.n or 0
    longer = tiny_problem_set("eval", n_eval + subset.n, data.seed, data.min_steps, data.max_steps)
    return ProblemSet(name="tiny-test", problems=longer.problems[n_eval:], grader=longer.grader)
