"""One problem-set interface over the tiny world and HF `datasets` sources."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from tsq.errors import UserError

if TYPE_CHECKING:
    from tsq.spec import DataSpec

Grader = Literal["exact", "math"]


@dataclass(frozen=True)
class Problem:
    id: str
    question: str  # the user message
    answer: str  # reference final answer
    difficulty: int | None = None  # tiny world: number of dependent steps; MATH: level


@dataclass(frozen=True)
class ProblemSet:
    name: str
    problems: tuple[Problem, ...]
    grader: Grader

    def __len__(self) -> int:
        return len(self.problems)

    def fingerprint(self) -> str:
        """Content hash: cache keys use it, so editing a data file invalidates what depends on it."""
        blob = json.dumps([asdict(p) for p in self.problems], sort_keys=True).encode()
        return hashlib.sha256(blob + self.grader.encode()).hexdigest()[:16]


def load_problem_set(data: DataSpec, split: Literal["train", "eval"]) -> ProblemSet:
    """The train or eval problems of a spec's `data:` section: the tiny world, or an HF-datasets source."""
    # deferred imports: both modules build on the types above
    from tsq.data.sources import hf_problem_set
    from tsq.data.tiny_world import tiny_problem_set

    if data.source != "tiny":
        return hf_problem_set(data, split)
    subset = getattr(data, split)
    if subset.n is None or subset.ids is not None:
        raise UserError(f"data.{split}: the tiny world takes a count n (ids and all-problems need a dataset)")
    return tiny_problem_set(split, subset.n, data.seed, data.min_steps, data.max_steps)
