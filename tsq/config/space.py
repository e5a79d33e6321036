"""The spec's `study:` section: search space, objectives, constraint, sampler, budgets, heartbeats.

Validated with pydantic (extra keys forbidden). Metric names and directions come from
`tsq.method.metrics.METRICS`; knob names, kinds and the default search from the recipe's spec model
(`tsq.config.spec.Spec.knobs`), which validates them. Whether each value a range can produce (low, high,
each choice, a fixed value) is a valid setting of its knob is checked by `tsq.config.spec.Spec`, which applies
it to the spec's own section: the bounds live in one place (the section's model) and are never copied here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tsq.method.metrics import METRICS

# The default method (a string, never imported by the library: tsq.recipe loads it)
DEFAULT_RECIPE = "objectives.tokensqueeze:recipe"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Model):
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False
    step: Annotated[float, Field(gt=0)] | None = None


class IntRange(_Model):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: Annotated[int, Field(gt=0)] = 1


class Categorical(_Model):
    type: Literal["categorical"]
    choices: Annotated[list[float | int | str], Field(min_length=1)]


Range = FloatRange | IntRange | Categorical
# A search entry is a range, or a plain value that stays fixed for every trial.
SearchEntry = Range | float | int | str
_RANGE_TYPES: dict[str, type[BaseModel]] = {"float": FloatRange, "int": IntRange, "categorical": Categorical}


def _parse_entry(name: str, raw: Any) -> Any:
    """A mapping becomes the range named by its `type` (float when omitted); errors keep the plain path
    `search.<name>.<key>` (a pydantic union would add the member's tag to it)."""
    if not isinstance(raw, dict):
        return raw
    kind = raw.get("type", "float")
    cls = _RANGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(_RANGE_TYPES)
        raise ValidationError.from_exception_data(
            "StudySpec", [_error((name, "type"), f"unknown range type (one of: {known})", kind)]
        )
    try:
        return cls.model_validate({"type": kind, **raw})
    except ValidationError as err:
        raise ValidationError.from_exception_data(
            "StudySpec", [_reloc(e, name) for e in err.errors()]
        ) from None


def _reloc(error: Any, name: str) -> InitErrorDetails:
    details = InitErrorDetails(type=error["type"], loc=(name, *error["loc"]), input=error["input"])
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


class Objective(_Model):
    metric: str
    direction: Literal["maximize", "minimize"] | None = None  # default: the metric's natural direction

    @property
    def resolved_direction(self) -> str:
        return self.direction or METRICS[self.metric].direction


class Constraint(_Model):
    # Feasible trials keep accuracy >= baseline accuracy - max_accuracy_drop (fractions, 0.02 = 2 points).
    max_accuracy_drop: Annotated[float, Field(ge=0)]
    # the metric it bounds: the paired change of accuracy against the baseline (tsq.method.metrics)
    metric: ClassVar[str] = "accuracy_delta"

    def value(self, metrics: Mapping[str, Any]) -> float:
        """Optuna's constraint value for a trial's metrics: feasible when <= 0."""
        return -float(metrics[self.metric]) - self.max_accuracy_drop


class SamplerSpec(_Model):
    # qmc: a scrambled Sobol sequence, a space-filling design (a census of the space, not a search);
    # botorch: BoTorch's qLogNEHVI, which integrates over the noise of the points already evaluated
    # (optuna-integration's BoTorchSampler; the opt-in extra, scripts/setup.sh --with-botorch)
    name: Literal["tpe", "nsga2", "gp", "botorch", "random", "grid", "qmc"] = "tpe"
    seed: int | None = 0
    n_startup_trials: Annotated[int, Field(ge=0)] | None = None  # tpe/gp/botorch: random ones first
    population_size: Annotated[int, Field(ge=2)] | None = None  # nsga2
    multivariate: bool = True  # tpe: one joint density over the knobs (False: one per knob, Optuna's default)
    # tpe: a running trial counts as a bad result (Optuna 5's constant liar, its default), so parallel workers
    # spread out
    constant_liar: bool = True

    # Each setting and the samplers it applies to: a setting given to another sampler is an error, not ignored
    _APPLIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "n_startup_trials": ("tpe", "gp", "botorch"),
        "population_size": ("nsga2",),
        "multivariate": ("tpe",),
        "constant_liar": ("tpe",),
    }

    @model_validator(mode="after")
    def _settings_apply(self) -> SamplerSpec:
        for setting, samplers in self._APPLIES.items():
            # a dumped spec sets every field: only a value other than the default is a setting
            changed = getattr(self, setting) != type(self).model_fields[setting].default
            if changed and self.name not in samplers:
                raise ValueError(f"{setting} applies to the {'/'.join(samplers)} sampler(s), not {self.name}")
        return self


class HeartbeatSpec(_Model):
    # A RUNNING trial without a heartbeat for grace_period seconds is failed and re-queued (max_retry times).
    interval: Annotated[int, Field(gt=0)] = 30
    grace_period: Annotated[int, Field(gt=0)] = 90
    max_retry: Annotated[int, Field(ge=0)] = 3


class FrontSpec(_Model):
    # p_front (docs/method.md "Statistics"): joint problem resamples, and the thresholds of the report's
    # "clearly on the front" (p_front >= clear) and "not distinguishable from the front" (>= possible)
    resamples: Annotated[int, Field(gt=0)] = 1000
    seed: int = 0
    clear: Annotated[float, Field(gt=0, le=1)] = 0.9
    possible: Annotated[float, Field(ge=0, le=1)] = 0.1

    @model_validator(mode="after")
    def _ordered(self) -> FrontSpec:
        if self.possible > self.clear:
            raise ValueError("front.possible must be <= front.clear")
        return self


class EffectsSpec(_Model):
    # `tsq report effects` (docs/method.md "Statistics"): the primary family is each arm's contrast on each
    # `primary` metric (default: the study's objectives), Holm-adjusted across the family; every other
    # contrast (other metrics, by depth) is exploratory. `margins`: metric -> equivalence margin in the
    # metric's own units (accuracy 0.05 = 5 points) for the two one-sided tests of "no change"; accuracy's
    # defaults to constraint.max_accuracy_drop. At 6 seeds a contrast's SE is ~1.9 points: a margin under
    # ~3.5 points can never conclude equivalence there.
    primary: list[str] | None = None
    margins: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class WandbSpec(_Model):
    project: str = "tsq"
    entity: str | None = None


def _default_objectives() -> list[Objective]:
    return [Objective(metric="accuracy"), Objective(metric="len_all")]


class StudySpec(_Model):
    name: str | None = None  # default: the spec's name
    storage: str | None = None  # default: SQLite under $TSQ_HOME (see tsq.study.storage)
    # empty: the recipe's default search (its spec model's `default_search`), filled in by
    # tsq.config.spec.Spec
    search: dict[str, SearchEntry] = Field(default_factory=dict)
    objectives: Annotated[list[Objective], Field(min_length=1)] = Field(default_factory=_default_objectives)
    constraint: Constraint | None = None
    # With a constraint: evaluate in stages (evaluation.stages) and stop a trial, recorded infeasible, once a
    # test shows it violates the constraint (tsq/method/early_stop.py); `tsq sweep launch --no-early-stop`:
    # False.
    early_stop: bool = True
    sampler: SamplerSpec = SamplerSpec()
    # Target number of COMPLETE trials in the study (a relaunch continues up to it, it does not add more).
    n_trials: Annotated[int, Field(gt=0)] | None = 20
    timeout: Annotated[float, Field(gt=0)] | None = None  # seconds per launch
    # the method: a recipe (module:object, tsq.recipe.Recipe) or a plain trial function (module:function)
    program: str = DEFAULT_RECIPE
    enqueue_defaults: bool = True
    max_consecutive_failures: Annotated[int, Field(gt=0)] = 5  # a worker stops after this many in a row
    heartbeat: HeartbeatSpec = HeartbeatSpec()
    front: FrontSpec = FrontSpec()
    effects: EffectsSpec = EffectsSpec()
    wandb: WandbSpec = WandbSpec()
    # `tsq sweep promote`: the full fidelity, a partial spec merged over the spec's own sections (e.g.
    # {training: {max_steps: 240}, data: {train: {n: 800}}}) and validated with the recipe's spec model when
    # promoting (tsq.study.promote.overlay_of); it may not set a searched knob (the point sets those)
    promote: dict[str, Any] | None = None

    @field_validator("search", mode="before")
    @classmethod
    def _parse_search(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        return {name: _parse_entry(name, value) for name, value in raw.items()}

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        errors: list[InitErrorDetails] = []
        for name, entry in self.search.items():
            errors.extend(_check_entry(name, entry))
        for i, obj in enumerate(self.objectives):
            if obj.metric not in METRICS:
                known = ", ".join(METRICS)
                errors.append(
                    _error(("objectives", i, "metric"), f"unknown metric (one of: {known})", obj.metric)
                )
        for field_name, named in (("primary", self.effects.primary or []), ("margins", self.effects.margins)):
            for name in named:
                if name not in METRICS:
                    known = ", ".join(METRICS)
                    errors.append(_error(("effects", field_name), f"unknown metric (one of: {known})", name))
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            errors.append(_error(("objectives",), "each metric may appear once", metrics))
        if self.sampler.name == "grid":
            errors.extend(_check_grid(self.search))
        if self.n_trials is None and self.timeout is None and self.sampler.name != "grid":
            errors.append(_error(("n_trials",), "set n_trials or timeout (or both)", None))
        if self.heartbeat.grace_period <= self.heartbeat.interval:
            errors.append(
                _error(("heartbeat", "grace_period"), "must be larger than heartbeat.interval", None)
            )
        if errors:
            raise ValidationError.from_exception_data("StudySpec", errors)
        return self

    # -- derived views ---------------------------------------------------------------------------
    @property
    def searched(self) -> dict[str, Range]:
        return {k: v for k, v in self.search.items() if isinstance(v, FloatRange | IntRange | Categorical)}

    @property
    def fixed(self) -> dict[str, float | int | str]:
        return {
            k: v for k, v in self.search.items() if not isinstance(v, FloatRange | IntRange | Categorical)
        }

    @property
    def directions(self) -> list[str]:
        return [o.resolved_direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]


def _error(loc: tuple[str | int, ...], msg: str, value: Any) -> InitErrorDetails:
    # "{msg}" template: the message is ours, pydantic must not reinterpret braces in it.
    return InitErrorDetails(type=PydanticCustomError("study", "{msg}", {"msg": msg}), loc=loc, input=value)


def _check_entry(name: str, entry: SearchEntry) -> list[InitErrorDetails]:
    """A range's own consistency; whether `name` is a knob of the recipe, and of which kind, is the spec
    model's check (tsq.config.spec.Spec)."""
    loc: tuple[str, ...] = ("search", name)
    errors: list[InitErrorDetails] = []
    if isinstance(entry, FloatRange | IntRange):
        if entry.low > entry.high:
            errors.append(_error((*loc, "low"), "must be <= high", entry.low))
        if entry.log and entry.low <= 0:
            errors.append(_error((*loc, "low"), "a log range needs low > 0", entry.low))
        if entry.log and isinstance(entry, FloatRange) and entry.step is not None:
            errors.append(_error((*loc, "step"), "step cannot be combined with log", entry.step))
    elif isinstance(entry, Categorical) and len(set(map(str, entry.choices))) != len(entry.choices):
        errors.append(_error((*loc, "choices"), "choices must be distinct", entry.choices))
    return errors


def bounding_values(entry: SearchEntry) -> list[tuple[tuple[str | int, ...], Any]]:
    """The values that bound what an entry can produce (low and high, each choice, or the fixed value), each
    with its location inside the entry: `tsq.config.spec.Spec` checks each is a valid setting of its knob."""
    if isinstance(entry, FloatRange | IntRange):
        return [(("low",), entry.low), (("high",), entry.high)]
    if isinstance(entry, Categorical):
        return [(("choices", i), c) for i, c in enumerate(entry.choices)]
    return [((), entry)]


def outside(entry: SearchEntry, value: Any) -> str | None:
    """Why `value` is not one the entry can propose ("outside [0.2, 1.0]"), or None when it is one."""
    if isinstance(entry, FloatRange | IntRange):
        return None if entry.low <= value <= entry.high else f"outside [{entry.low:g}, {entry.high:g}]"
    if isinstance(entry, Categorical):
        return None if value in entry.choices else f"not one of {entry.choices}"
    return None if value == entry else f"not the fixed value {entry}"


def _check_grid(search: dict[str, SearchEntry]) -> list[InitErrorDetails]:
    def gridable(entry: SearchEntry) -> bool:
        if isinstance(entry, FloatRange | IntRange):
            return entry.step is not None and not entry.log
        return True

    return [
        _error(
            ("search", name),
            "the grid sampler needs categorical choices or a range with a step (no log)",
            None,
        )
        for name, entry in search.items()
        if not gridable(entry)
    ]


def grid_values(entry: Range) -> list[float | int | str]:
    """Every value of a range for the grid sampler (a categorical's choices, or low..high by step)."""
    if isinstance(entry, Categorical):
        return list(entry.choices)
    assert entry.step is not None
    count = math.floor((entry.high - entry.low) / entry.step + 1e-9) + 1
    if isinstance(entry, IntRange):
        return [entry.low + i * entry.step for i in range(count)]
    return [round(entry.low + i * entry.step, 12) for i in range(count)]


def contains(entry: Range, value: float | int | str) -> bool:
    """Whether `value` can be sampled from `entry` (used to decide whether a default point is enqueued)."""
    if isinstance(entry, Categorical):
        return value in entry.choices
    if isinstance(value, str) or not entry.low <= value <= entry.high:
        return False
    if entry.step is None or entry.log:
        return True
    k = (value - entry.low) / entry.step
    return abs(k - round(k)) < 1e-9


def range_grid(entry: Range, n: int = 16) -> list[Any]:
    """`n` values spread over a range, ends included (log-spaced on a log range; on a range with a step, its
    grid values, thinned evenly to `n`); a categorical's choices."""
    if isinstance(entry, Categorical):
        return list(entry.choices)
    if entry.step is not None and not entry.log:
        values = grid_values(entry)
        if len(values) <= n:
            return values
        picks = sorted({round(i * (len(values) - 1) / (n - 1)) for i in range(n)})
        return [values[i] for i in picks]
    if entry.low == entry.high:
        return [entry.low]
    space = np.geomspace if entry.log else np.linspace
    values = [float(v) for v in space(entry.low, entry.high, n)]
    values[0], values[-1] = entry.low, entry.high  # exact ends (geomspace rounds them)
    if isinstance(entry, IntRange):
        return sorted({round(v) for v in values})
    return values
