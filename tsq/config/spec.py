"""The sweep spec (`sweeps/*.yaml`): validated with pydantic; errors name the field.

One spec drives everything: `tsq baseline`, `tsq trial run` and `tsq sweep launch`. Sections:
model, data, sampling (self-samples for training), evaluation, selection (α acts there), refinement (ε),
training (λ, η, β), params (the default trial point), and the study sections (search, objectives, ...).

Inheritance: `extends: base.yaml` (a path relative to the spec file's folder) takes the base's pipeline
sections (`INHERITED`: every Spec field but name and study: model, data, sampling, ..., params, cache_dir)
and merges the child's over them key by key, recursively: a mapping in the child merges into the base's, a
scalar, list or null replaces it. `name` and `study` are never inherited: a spec extends the pipeline, not
the experiment (a study section merged into another would mix two search spaces). The base is a spec of its
own (valid alone, and it may extend another); a cycle, a missing or unreadable base, or an invalid one is a
one-line UserError naming the child file and its `extends` field.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tsq.config.knobs import KNOBS
from tsq.config.space import StudySpec, bounding_values
from tsq.errors import UserError
from tsq.method.early_stop import check_fractions
from tsq.method.losses import DEFAULT_LOSS, LossName
from tsq.method.select import DEFAULT_VARIANT, VariantName


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The tiny model's build variants (tsq.engines.tiny_model.TINY_BUILDS holds each one's settings)
TinyVariant = Literal["default", "test"]


class ModelSpec(_Section):
    # "tiny" is the built-in tiny reasoning model (shipped with tsq, tsq/assets/); anything else is an HF hub
    # id or a local model directory.
    path: str = "tiny"
    tiny_variant: TinyVariant = "default"
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # fetch an HF hub model missing from the local HF cache through huggingface_hub (else: an error)
    download: bool = False


class SplitSpec(_Section):
    # HF sources: a split name of data.source, or a local .json/.jsonl/.parquet file holding this split;
    # unset: "train" / "test" for hub ids, the file itself for a local source. The tiny world uses train/eval.
    split: str | None = None
    n: Annotated[int, Field(gt=0)] | None = None  # subset size (seeded); None = all
    ids: list[str] | None = None  # explicit problem ids


class DataSpec(_Section):
    source: str = "tiny"  # "tiny", an HF hub id, or a local .json/.jsonl/.parquet file
    format: Literal["auto", "tiny", "math500", "gsm8k", "aime"] = "auto"
    config: str | None = None  # HF dataset config name (e.g. "main" for openai/gsm8k)
    # HF sources: text appended to each question after a blank line. None = DeepSeek's recommended math
    # instruction (reason step by step, answer in \boxed{}: what the grader reads); "" = the question alone.
    instruction: str | None = None
    train: SplitSpec = SplitSpec(n=400)
    eval: SplitSpec = SplitSpec(n=100)
    # a held-out split the sweep never sees, for `tsq sweep confirm --split test` (winner's curse)
    test: SplitSpec | None = None
    seed: int = 0
    # tiny world only: difficulty range (number of dependent steps)
    min_steps: Annotated[int, Field(ge=1)] = 1
    max_steps: Annotated[int, Field(ge=1)] = 4


class SamplingSpec(_Section):
    backend: Literal["hf", "vllm"] = "hf"
    n: Annotated[int, Field(gt=0)] = 8
    temperature: Annotated[float, Field(ge=0)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: Annotated[int, Field(gt=0)] = 256
    batch_size: Annotated[int, Field(gt=0)] = 64
    seed: int = 0
    # vLLM only (see "GPU memory plan" in docs/real-models.md). The share of the GPU's memory the engine
    # takes (weights + KV cache), and the longest prompt + response it serves (None: the model's own
    # limit; keep it above the longest prompt plus the larger of the two max_new_tokens).
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    # vLLM on CUDA: the engine sleeps (weights to CPU RAM, KV cache dropped) while refinement scoring, the
    # reference pass and training use the GPU, and checks a greedy probe when it wakes. Ignored on CPU.
    sleep_mode: bool = True


class EvaluationSpec(_Section):
    n: Annotated[int, Field(gt=0)] = 8  # samples per eval problem (paper: 16)
    temperature: Annotated[float, Field(ge=0)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: Annotated[int, Field(gt=0)] = 256
    budget: Annotated[int, Field(gt=0)] = 128  # token budget B of the budgeted AUC
    seed: int = 1234
    bootstrap: Annotated[int, Field(gt=0)] = 2000  # resamples for the accuracy-delta CI
    # Staged evaluation (tsq/method/early_stop.py): cumulative fractions of the eval problems, increasing, the last
    # 1.0. Used only when a study constraint is set and the early stop is on (study.early_stop).
    stages: tuple[float, ...] = (0.25, 0.5, 1.0)

    @model_validator(mode="after")
    def _check_stages(self) -> EvaluationSpec:
        check_fractions(self.stages)
        return self


class SelectionSpec(_Section):
    variant: VariantName = DEFAULT_VARIANT  # the variants: tsq.method.select.SELECTION_VARIANTS
    max_pairs: Annotated[int, Field(gt=0)] = 64  # M: pairs per problem
    extra_neg_ratio: Annotated[float, Field(gt=1)] = 1.5
    # (our reading) k = max(min_positives, ceil(q*c)) when 1 <= c < N; binds only at alpha = 0. 0 = literal
    min_positives: Annotated[int, Field(ge=0)] = 1


class RefinementSpec(_Section):
    enabled: bool = True
    k: Annotated[int, Field(gt=0)] = 8  # candidates per step (paper: 64)
    window: Annotated[int, Field(gt=0)] = 32  # L: KL window in tokens (paper: 512)
    temperature: Annotated[float, Field(gt=0)] = 1.0
    max_step_tokens: Annotated[int, Field(gt=0)] = 48
    # (our reading) KL averaged over the window ("mean", so ε is per token) or summed as written ("sum")
    kl_reduction: Literal["mean", "sum"] = "mean"
    batch_size: Annotated[int, Field(gt=0)] = 64
    seed: int = 0
    # steps searched per trace, its longest first (None = all); bounds the one-off cost on long traces
    max_steps_per_trace: Annotated[int, Field(gt=0)] | None = 64


class LoraSpec(_Section):
    r: Annotated[int, Field(gt=0)] = 16
    alpha: Annotated[int, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] | str = "all-linear"


class TrainingSpec(_Section):
    loss: LossName = DEFAULT_LOSS  # the variants and their terms: tsq.method.losses.LOSSES
    beta: Annotated[float, Field(gt=0)] = 0.1
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    max_steps: Annotated[int, Field(gt=0)] = 100
    batch_size: Annotated[int, Field(gt=0)] = 32
    # tokens of prompt + response + EOS; None = derived from the longest prompt + sampling.max_new_tokens + 1
    # (tsq.engines.train.check_max_length, which also refuses a value too small for them)
    max_length: Annotated[int, Field(gt=0)] | None = None
    seed: int = 0
    gradient_checkpointing: bool = False
    lora: LoraSpec = LoraSpec()


class TrialParams(_Section):
    """One point of the search space: the four TokenSqueeze knobs."""

    alpha: Annotated[float, Field(ge=0, le=1)] = 0.2
    epsilon: Annotated[float, Field(gt=0)] = 0.005
    lam: Annotated[float, Field(ge=0, alias="lambda")] = 1.0
    eta: Annotated[float, Field(ge=0)] = 0.5

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Spec(_Section):
    name: str = "tsq"
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    sampling: SamplingSpec = SamplingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    selection: SelectionSpec = SelectionSpec()
    refinement: RefinementSpec = RefinementSpec()
    training: TrainingSpec = TrainingSpec()
    params: TrialParams = TrialParams()
    cache_dir: str | None = None  # default: $TSQ_HOME/cache
    # The study section (search space, objectives, sampler, budgets): schema in tsq.config.space.
    study: StudySpec = Field(default_factory=StudySpec)

    @model_validator(mode="after")
    def _check_ranges(self) -> Spec:
        if self.data.min_steps > self.data.max_steps:
            raise ValueError("data.min_steps must be <= data.max_steps")
        errors = [
            error
            for name, entry in self.study.search.items()
            for where, value in bounding_values(entry)
            if (error := self._setting_error(name, where, value)) is not None
        ]
        if errors:
            raise ValidationError.from_exception_data("Spec", errors)
        return self

    def _setting_error(
        self, name: str, where: tuple[str | int, ...], value: object
    ) -> InitErrorDetails | None:
        """Whether `value` is a valid setting of knob `name`: applied to the knob's own spec section, so a
        search range is held to exactly the bounds a spec file is."""
        knob = KNOBS[name]
        head, *rest = knob.path
        data: object = knob.to_spec(value)
        for key in reversed(rest):
            data = {key: data}
        try:
            type(getattr(self, head)).model_validate(data)
        except ValidationError as err:
            msg = err.errors()[0]["msg"]
            return InitErrorDetails(
                type=PydanticCustomError("study", "{msg}", {"msg": msg}),
                loc=("study", "search", name, *where),
                input=value,
            )
        return None


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line: the first bad field as a dotted path and what is wrong with it.

    An unknown key comes first (a misspelt key is also why its real name reads as missing), with the nearest
    valid name of its section when one is close."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        names = _field_names(model or Spec, first["loc"][:-1])
        if close := difflib.get_close_matches(str(first["loc"][-1]), names, n=1, cutoff=0.6):
            msg += f" (did you mean {close[0]}?)"
    extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {loc}: {msg}{extra}"


def _field_names(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the section at `loc` under `model` (mapping keys and list indices stepped over)."""
    annotation: Any = model
    for part in loc:
        fields = _model_of(annotation)
        if fields is not None and isinstance(part, str) and part in fields.model_fields:
            annotation = fields.model_fields[part].annotation
        else:  # a mapping's key or a list's index: step into its value type
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[-1] if args else None
    found = _model_of(annotation)
    return list(found.model_fields) if found is not None else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # Optional[Section], Section | None
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


# The sections a spec inherits from the spec it `extends`: every field of Spec but the experiment's own
INHERITED = tuple(name for name in Spec.model_fields if name not in ("name", "study"))


def load_spec(path: Path | str) -> Spec:
    """Read and validate a spec file (resolving `extends`); raises UserError with one line naming the file
    and field."""
    path = Path(path)
    raw = _resolve(path, _read_raw(path), ())
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path))) from None


def merge_sections(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`, key by key: mappings merge recursively, anything else in the child replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(path: Path, raw: dict[str, Any], seen: tuple[Path, ...]) -> dict[str, Any]:
    """`raw` with its `extends` resolved: the base's INHERITED sections (its own chain resolved first), the
    child's merged over them. `seen`: the files of the chain so far, to refuse a cycle."""
    if "extends" not in raw:
        return raw
    raw = dict(raw)
    ref = raw.pop("extends")
    where = f"{path}: extends"
    if not isinstance(ref, str) or not ref.strip():
        raise UserError(f"{where}: must be the path of a spec file (relative to this file's folder)")
    base_path = path.parent / ref
    chain = (*seen, path.resolve())
    if base_path.resolve() in chain:
        raise UserError(f"{where}: {ref} is already in this chain of extends (a cycle)")
    try:
        base = _resolve(base_path, _read_raw(base_path), chain)
        # the base must be a spec on its own: its errors name it, not the child that merged them in
        Spec.model_validate(base)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    except ValidationError as err:
        raise UserError(f"{where}: {format_validation_error(err, str(base_path))}") from None
    inherited = {key: base[key] for key in INHERITED if key in base}
    return merge_sections(inherited, raw)


def _read_raw(path: Path) -> dict[str, Any]:
    """A spec file's YAML mapping, unvalidated; UserError (one line naming the file) when it is not one."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: spec file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read spec file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; a spec is YAML text") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: malformed YAML{where}") from None
    if raw is None or raw == {}:
        # an empty file is a wrong path or a failed write far more often than a wish for every default
        raise UserError(f"{path}: the spec is empty; write at least its name (see sweeps/smoke.yaml)")
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the spec must be a mapping of sections, got {type(raw).__name__}")
    return raw
