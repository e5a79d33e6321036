"""Load a spec's problem split from its source: the tiny world or an HF-datasets source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tsq.data.problems import ProblemSet
from tsq.data.sources import hf_problem_set
from tsq.data.tiny_world import tiny_problem_set
from tsq.errors import UserError

if TYPE_CHECKING:  # the spec sits above the data layer; this module only reads its fields
    from tsq.spec import DataSpec


def load_problem_set(data: DataSpec, split: Literal["train", "eval"]) -> ProblemSet:
    """The train or eval problems of a spec's `data:` section: the tiny world, or an HF-datasets source."""
    if data.source != "tiny":
        return hf_problem_set(data, split)
    subset = getattr(data, split)
    if subset.n is None or subset.ids is not None:
        raise UserError(f"data.{split}: the tiny world takes a count n (ids and all-problems need a dataset)")
    return tiny_problem_set(split, subset.n, data.seed, data.min_steps, data.max_steps)
