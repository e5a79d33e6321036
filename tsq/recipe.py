"""The trial-program contract, owned by the library: what a program gets (`TrialContext`), what it returns
(`TrialResult`), and the `TrialProgram` protocol it implements. `study.program` names one as
`module:function`; the study runner and `tsq trial run` both load it with `load_program`.

`objectives/tokensqueeze.py` is the default program. A program never reads `spec.study`: what it needs to
know of the study (how far each knob ranges, for study-wide caching) comes in `TrialContext.scope`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tsq.cache import Cache
from tsq.config.space import Categorical, FloatRange, IntRange, StudySpec
from tsq.config.spec import Spec, TrialParams
from tsq.data.loading import Split
from tsq.engines.generation.base import Backend
from tsq.errors import UserError


@dataclass(frozen=True)
class StudyScope:
    """How far each knob ranges across the study: the numeric extent of a float/int knob and the values a
    categorical knob can take (its choices, or its fixed value). A knob the study does not search is absent;
    the program then only meets the spec's own value."""

    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def extent(self, name: str, value: float) -> tuple[float, float]:
        """The smallest and largest value of knob `name` any trial can take, `value` included."""
        low, high = self.bounds.get(name, (value, value))
        return min(low, value), max(high, value)

    def values(self, name: str, value: Any) -> set[Any]:
        """Every value of categorical knob `name` any trial can take, `value` included."""
        return {value, *self.choices.get(name, ())}


def scope_of(study: StudySpec) -> StudyScope:
    """The scope of a study section: numeric extents of ranges and numeric choices, and every value of a
    categorical or fixed entry."""
    bounds: dict[str, tuple[float, float]] = {}
    choices: dict[str, tuple[Any, ...]] = {}
    for name, entry in study.search.items():
        if isinstance(entry, FloatRange | IntRange):
            bounds[name] = (entry.low, entry.high)
            continue
        values = tuple(entry.choices) if isinstance(entry, Categorical) else (entry,)
        choices[name] = values
        numbers = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            bounds[name] = (min(numbers), max(numbers))
    return StudyScope(bounds, choices)


@dataclass(frozen=True)
class TrialSeeds:
    """Seeds a replicate overrides (None: the spec's own): training, and sampling of the evaluation."""

    training: int | None = None
    evaluation: int | None = None


@dataclass
class TrialContext:
    cache: Cache
    out_dir: Path  # the trial writes adapter/, metrics.json and its per-response records here
    scope: StudyScope = field(default_factory=StudyScope)
    on_log: Callable[[dict[str, Any]], None] | None = None  # training curves (W&B)
    trial_number: int | None = None
    # A generation backend the worker owns and reuses across trials (None: the program makes and closes its
    # own). The program must not close it.
    backend: Backend | None = None
    seeds: TrialSeeds = field(default_factory=TrialSeeds)
    split: Split = (
        "eval"  # the split the trial is evaluated on ("test": the held-out split of `sweep confirm`)
    )
    # The study's max_accuracy_drop when the early stop is on (a constraint is set, no --no-early-stop): the
    # program may then evaluate in stages and stop a trial that violates it (tsq/method/early_stop.py). None: off.
    early_stop_max_drop: float | None = None


@dataclass
class TrialResult:
    params: dict[str, Any]
    metrics: dict[str, Any]  # every metric of tsq.method.metrics.METRICS it measured, with `<metric>_lo/_hi`
    baseline: dict[str, Any]  # the same keys for the base model
    budget_curve: list[tuple[int, float]]  # (budget, accuracy within budget) for the trial
    baseline_budget_curve: list[tuple[int, float]]
    adapter_dir: Path
    records: Path | None = None  # per-response records of the trial's evaluation (JSONL)
    baseline_records: Path | None = None  # the same for the baseline
    cache_keys: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)  # pairs, refinement, training, cache use

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("adapter_dir", "records", "baseline_records"):
            out[key] = None if out[key] is None else str(out[key])
        return out


class TrialProgram(Protocol):
    """One trial: train and evaluate at `params`; raise `tsq.errors.TrialFailed` when no meaningful result
    can come out (the trial is then recorded FAIL with the reason)."""

    def __call__(self, spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult: ...


class WarmableProgram(TrialProgram, Protocol):
    """A program whose parameter-independent stages can run ahead of any trial (`tsq cache warm`): it has a
    `warm` attribute, `warm(spec, ctx) -> summary`, that fills the cache every trial of the study reads."""

    warm: Callable[[Spec, TrialContext], dict[str, Any]]


def warm_hook(program: TrialProgram, path: str) -> Callable[[Spec, TrialContext], dict[str, Any]]:
    """The program's warm-up; UserError when it has none."""
    warm = getattr(program, "warm", None)
    if not callable(warm):
        raise UserError(f"study.program: {path} has no warm-up (a `warm` attribute); nothing to warm")
    return warm


def load_program(path: str) -> TrialProgram:
    """`module:function`, e.g. `objectives.tokensqueeze:run_trial`."""
    module_name, _, func_name = path.partition(":")
    if not module_name or not func_name:
        raise UserError(f"study.program: {path!r} is not module:function")
    try:
        program = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"study.program: cannot load {path} ({exc})") from None
    if not callable(program):
        raise UserError(f"study.program: {path} is not callable")
    return program
