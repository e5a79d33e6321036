"""The recipe contract, owned by the library: what a method declares (`Recipe`), what a trial gets
(`TrialContext`) and returns (`TrialResult`), and what its knob check says (`Finding`).

A recipe declares its spec model (the core spec plus its own sections, its knobs and its default search), its
preflight, its knob check and study-wide plan, its warm-up, the engine a worker keeps for it, and its trial;
and nothing else. `study.program` names one as `module:object`; a plain trial function (`module:function`,
`fn(spec, spec.params, ctx) -> TrialResult`) is the simplest recipe (`FunctionRecipe`). The study runner, the
CLI and `load_spec` all reach the method through `load_recipe`. TokenSqueeze is objectives/tokensqueeze/.

A trial never reads `spec.study`: what it needs to know of the study (how far each knob ranges, for
study-wide caching) comes in `TrialContext.scope`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from tsq.cache import Cache
from tsq.config.pipeline import PlainSpec
from tsq.config.space import DEFAULT_RECIPE, Categorical, FloatRange, IntRange, Range, StudySpec, range_grid
from tsq.config.spec import Spec, read_spec
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
    # program may then evaluate in stages and stop a trial that violates it (tsq/method/early_stop.py). None:
    # off.
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


State = Literal["live", "inert", "moot", "unknown"]


@dataclass(frozen=True)
class Finding:
    """What `tsq sweep check` says about one searched knob:
    - **live**: two values of its range give trials different inputs (pairs, refined texts, a loss term, ...);
    - **inert**: every value of its range gives the same trial;
    - **moot**: a setting of another knob removes the term the knob acts on;
    - **unknown**: the answer needs data that is not cached yet."""

    knob: str
    state: State
    reason: str  # one line; for an inert or moot knob it carries the remedy
    distinct: int | None = None  # distinct trial inputs across the range
    warnings: tuple[str, ...] = ()  # e.g. a range below a noise floor, a choice equal to another

    @property
    def live(self) -> bool | None:
        return None if self.state == "unknown" else self.state == "live"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "live": self.live,
            "distinct": self.distinct,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }

    def line(self) -> str:
        return f"{self.knob}: {self.state}: {self.reason}"


def plain_finding(name: str, entry: Range) -> Finding:
    """A knob the recipe knows nothing more of: live unless its range holds one value."""
    values = range_grid(entry)
    span = span_of(entry)
    if len(values) < 2 or (not isinstance(entry, Categorical) and entry.low == entry.high):
        return Finding(
            name, "inert", f"the range {span} holds one value; fix it in study.search or widen it", 1
        )
    if isinstance(entry, Categorical):
        return Finding(name, "live", f"{len(values)} choices {span}", len(values))
    return Finding(name, "live", f"{len(values)} grid values over {span}")


def span_of(entry: Range) -> str:
    if isinstance(entry, Categorical):
        return "{" + ", ".join(map(str, entry.choices)) + "}"
    return f"[{fmt_value(entry.low)}, {fmt_value(entry.high)}]"


def fmt_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class CheckReport:
    """A recipe's `tsq sweep check`: one finding per searched knob, in `study.search` order, and what else the
    method checks (its own lines and JSON sections, and the warnings a launch logs)."""

    findings: dict[str, Finding]
    lines: list[str] = field(default_factory=list)  # printed after the findings
    sections: dict[str, Any] = field(default_factory=dict)  # `--json`: beside "knobs"
    launch_warnings: list[str] = field(default_factory=list)  # besides the knobs that are not live

    def to_json(self) -> dict[str, Any]:
        return {"knobs": {name: f.to_json() for name, f in self.findings.items()}, **self.sections}


@runtime_checkable
class Recipe(Protocol):
    """A method, as the library sees it. `RecipeBase` gives each part a default."""

    @property
    def spec_model(self) -> type[Spec]:
        """The core spec plus the method's sections, knobs and default search."""
        ...

    def preflight(self, spec: Spec) -> None:
        """Before a launch writes anything: refuse bad input with one UserError line."""

    def check(
        self, spec: Spec, cache: Cache | None, *, source: str = "", gpu: str = "h100", launch: bool = False
    ) -> CheckReport:
        """`tsq sweep check` (and the warnings of `sweep launch`, `launch=True`): from the spec and the
        cache only; never loads, builds or downloads a model. `source`: the spec file, for the lines' advice;
        `gpu`: the GPU a memory plan is for."""
        ...

    def warm(self, spec: Spec, ctx: TrialContext) -> dict[str, Any]:
        """`tsq cache warm`: fill the study-wide cache before any trial; a summary of cache use."""
        ...

    def open_engine(self, spec: Spec) -> Backend | None:
        """The generation engine a worker keeps across trials (None: the recipe needs none)."""
        ...

    def run(self, spec: Spec, ctx: TrialContext) -> TrialResult:
        """One trial at the point the spec holds; raise `tsq.errors.TrialFailed` when no meaningful result can
        come out (the trial is then recorded FAIL with the reason)."""
        ...


class RecipeBase:
    """Defaults for every part of a recipe but its trial: no preflight, every knob judged by its range alone,
    no warm-up, no engine kept."""

    spec_model: type[Spec] = PlainSpec

    def preflight(self, spec: Spec) -> None:
        return None

    def check(
        self, spec: Spec, cache: Cache | None, *, source: str = "", gpu: str = "h100", launch: bool = False
    ) -> CheckReport:
        return CheckReport({name: plain_finding(name, entry) for name, entry in spec.study.searched.items()})

    def warm(self, spec: Spec, ctx: TrialContext) -> dict[str, Any]:
        raise UserError(f"study.program: {spec.study.program} has no warm-up; nothing to warm")

    def open_engine(self, spec: Spec) -> Backend | None:
        return None

    def run(self, spec: Spec, ctx: TrialContext) -> TrialResult:
        raise NotImplementedError


TrialFunction = Callable[[Any, Any, TrialContext], TrialResult]


class FunctionRecipe(RecipeBase):
    """A plain trial function as a recipe: `fn(spec, spec.params, ctx)`, on `spec_model` (default
    `PlainSpec`: the pipeline sections and a free `params` mapping, every searched name a knob of its own)."""

    def __init__(self, fn: TrialFunction, spec_model: type[Spec] = PlainSpec) -> None:
        self.fn = fn
        self.spec_model = spec_model

    def run(self, spec: Spec, ctx: TrialContext) -> TrialResult:
        return self.fn(spec, getattr(spec, "params", None), ctx)


@functools.cache
def load_recipe(path: str) -> Recipe:
    """`module:object` (a Recipe) or `module:function` (a plain trial function), e.g.
    `objectives.tokensqueeze:recipe`; UserError naming `study.program` when it cannot be loaded."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UserError(f"study.program: {path!r} is not module:object")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"study.program: cannot load {path} ({exc})") from None
    if isinstance(found, Recipe):
        return found
    if callable(found) and not isinstance(found, type):
        return FunctionRecipe(found)
    raise UserError(f"study.program: {path} is neither a recipe nor a trial function")


def recipe_of(spec: Spec) -> Recipe:
    return load_recipe(spec.study.program)


def _model_of(raw: dict[str, Any]) -> type[Spec]:
    study = raw.get("study")
    program = study.get("program", DEFAULT_RECIPE) if isinstance(study, dict) else DEFAULT_RECIPE
    if not isinstance(program, str):
        raise UserError(f"study.program: {program!r} is not module:object")
    return load_recipe(program).spec_model


def load_spec(path: Path | str) -> Spec:
    """Read and validate a spec file with its recipe's spec model (`study.program`; default TokenSqueeze);
    raises UserError with one line naming the file and field."""
    try:
        return read_spec(path, _model_of)
    except UserError as err:
        if str(err).startswith("study.program"):
            raise UserError(f"{path}: {err}") from None
        raise
