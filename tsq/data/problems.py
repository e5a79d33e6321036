"""The problem types every source produces (the tiny world, HF `datasets`); `tsq.data.loading` loads them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

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
