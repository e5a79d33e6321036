"""The core of the sweep spec (`sweeps/*.yaml`): validated with pydantic; errors name the field.

One spec drives everything: `tsq baseline`, `tsq trial run` and `tsq sweep launch`. The library owns the
sections every method shares: name, model, data, cache_dir and the study section (search, objectives, ...).
A recipe's spec model extends `Spec` with the method's own sections and declares its knobs
(`Spec.knobs`); TokenSqueeze's is objectives/tokensqueeze/config.py, over the pipeline components' sections
of tsq/config/pipeline.py. `tsq.recipe.load_spec` picks the model by the spec's `study.program`.

Inheritance: `extends: base.yaml` (a path relative to the spec file's folder) takes the base's pipeline
sections (`inherited(model)`: every field but name and study: model, data, sampling, ..., params, cache_dir)
and merges the child's over them key by key, recursively: a mapping in the child merges into the base's, a
scalar, list or null replaces it. `name` and `study` are never inherited: a spec extends the pipeline, not
the experiment (a study section merged into another would mix two search spaces). The base is a spec of its
own (valid alone, and it may extend another); a cycle, a missing or unreadable base, or an invalid one is a
one-line UserError naming the child file and its `extends` field.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tsq.config.knobs import Knob
from tsq.config.space import FloatRange, IntRange, SearchEntry, StudySpec, bounding_values
from tsq.errors import UserError


class Section(BaseModel):
    """A spec section: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# The tiny model's build variants (tsq.engines.tiny_model.TINY_BUILDS holds each one's settings)
TinyVariant = Literal["default", "test"]


class ModelSpec(Section):
    # "tiny" is the built-in tiny reasoning model (shipped with tsq, tsq/assets/); anything else is an HF hub
    # id or a local model directory.
    path: str = "tiny"
    tiny_variant: TinyVariant = "default"
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # fetch an HF hub model missing from the local HF cache through huggingface_hub (else: an error)
    download: bool = False


class SplitSpec(Section):
    # HF sources: a split name of data.source, or a local .json/.jsonl/.parquet file holding this split;
    # unset: "train" / "test" for hub ids, the file itself for a local source. The tiny world uses train/eval.
    split: str | None = None
    n: Annotated[int, Field(gt=0)] | None = None  # subset size (seeded); None = all
    ids: list[str] | None = None  # explicit problem ids


class DataSpec(Section):
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


class Spec(Section):
    """The sections every method shares. A recipe's spec model subclasses it with its own sections and
    declares its knobs and default search; the library reads knobs only through `knob`."""

    # the recipe's knobs (what `study.search` may name) and the search a spec without one gets
    knobs: ClassVar[Mapping[str, Knob]] = {}
    default_search: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    name: str = "tsq"
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    cache_dir: str | None = None  # default: $TSQ_HOME/cache
    # The study section (search space, objectives, sampler, budgets): schema in tsq.config.space.
    study: StudySpec = Field(default_factory=StudySpec)

    @classmethod
    def knob(cls, name: str) -> Knob | None:
        """The knob `study.search.<name>` sets, or None when the recipe has none of that name."""
        return cls.knobs.get(name)

    @model_validator(mode="before")
    @classmethod
    def _fill_default_search(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not cls.default_search:
            return raw
        study = raw.get("study", {})
        if isinstance(study, dict) and "search" not in study:
            return {**raw, "study": {**study, "search": dict(cls.default_search)}}
        return raw

    @model_validator(mode="after")
    def _check_search(self) -> Spec:
        if self.data.min_steps > self.data.max_steps:
            raise ValueError("data.min_steps must be <= data.max_steps")
        errors: list[InitErrorDetails] = []
        for name, entry in self.study.search.items():
            knob = self.knob(name)
            if knob is None:
                known = ", ".join(self.knobs) or "the recipe declares none"
                errors.append(_study_error((name,), f"not a searchable parameter (one of: {known})", name))
                continue
            if (error := _kind_error(knob, entry)) is not None:
                errors.append(error)
                continue
            errors += [
                error
                for where, value in bounding_values(entry)
                if (error := self._setting_error(knob, where, value)) is not None
            ]
        if errors:
            raise ValidationError.from_exception_data("Spec", errors)
        return self

    def _setting_error(
        self, knob: Knob, where: tuple[str | int, ...], value: object
    ) -> InitErrorDetails | None:
        """Whether `value` is a valid setting of `knob`: applied to the knob's own spec section, so a search
        range is held to exactly the bounds a spec file is."""
        head, *rest = knob.path
        section = getattr(self, head)
        if not isinstance(section, BaseModel):  # a free mapping (a plain function's params): any value
            return None
        data: object = knob.to_spec(value)
        for key in reversed(rest):
            data = {key: data}
        try:
            type(section).model_validate(data)
        except ValidationError as err:
            return _study_error((knob.name, *where), err.errors()[0]["msg"], value)
        return None


def _study_error(loc: tuple[str | int, ...], msg: str, value: object) -> InitErrorDetails:
    # "{msg}" template: the message is ours, pydantic must not reinterpret braces in it
    return InitErrorDetails(
        type=PydanticCustomError("study", "{msg}", {"msg": msg}), loc=("study", "search", *loc), input=value
    )


def _kind_error(knob: Knob, entry: SearchEntry) -> InitErrorDetails | None:
    if knob.kind == "categorical" and isinstance(entry, FloatRange | IntRange):
        return _study_error(
            (knob.name, "type"), "this parameter takes categorical choices or a fixed value", entry.type
        )
    if knob.kind == "int" and isinstance(entry, FloatRange):
        return _study_error((knob.name, "type"), "this parameter is an integer: use type: int", "float")
    return None


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] = Spec) -> str:
    """One line: the first bad field as a dotted path and what is wrong with it.

    An unknown key comes first (a misspelt key is also why its real name reads as missing), with the nearest
    valid name of its section when one is close."""
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        names = _field_names(model, first["loc"][:-1])
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


# Picks the spec model of a raw spec mapping: its recipe's (tsq.recipe.load_spec passes it)
ModelOf = Callable[[dict[str, Any]], type[Spec]]


def inherited(model: type[Spec]) -> tuple[str, ...]:
    """The sections a spec inherits from the spec it `extends`: every field but the experiment's own."""
    return tuple(name for name in model.model_fields if name not in ("name", "study"))


def read_spec(path: Path | str, model_of: ModelOf) -> Spec:
    """Read and validate a spec file (resolving `extends`) with the model `model_of` picks for it; raises
    UserError with one line naming the file and field."""
    path = Path(path)
    raw = _resolve(path, _read_raw(path), (), model_of)
    model = model_of(raw)
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path), model)) from None


def merge_sections(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`, key by key: mappings merge recursively, anything else in the child replaces."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = value
    return out


def _resolve(path: Path, raw: dict[str, Any], seen: tuple[Path, ...], model_of: ModelOf) -> dict[str, Any]:
    """`raw` with its `extends` resolved: the base's inherited sections (its own chain resolved first), the
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
        base = _resolve(base_path, _read_raw(base_path), chain, model_of)
        # the base must be a spec on its own: its errors name it, not the child that merged them in
        base_model = model_of(base)
        base_model.model_validate(base)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    except ValidationError as err:
        raise UserError(f"{where}: {format_validation_error(err, str(base_path), base_model)}") from None
    taken = {key: base[key] for key in inherited(model_of(raw)) if key in base}
    return merge_sections(taken, raw)


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
