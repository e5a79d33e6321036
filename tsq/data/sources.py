"""Problem sets from HF `datasets`: MATH500, GSM8K and AIME schemas, from a hub id or a local file.

Schemas (column names matched case-insensitively):
- math500: problem, answer (or, MATH-train style, only a solution whose last `\\boxed{}` is the answer),
  optional level ("Level 3" or 3), subject/type, unique_id.
- gsm8k: question, answer whose last line is `#### N` (N is the reference).
- aime: problem, answer (an integer), optional id.
A "level" or "difficulty" column becomes `Problem.difficulty` in every schema.

Splits: each of train/eval names a split of `data.source` (default "train"/"test" for hub ids) or a local
file of its own. When both resolve to the same data (one local file, or MATH500's single "test" split)
they are disjoint: one seeded permutation, eval takes its problems first and train takes from the rest.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tsq.data.grading import extract_boxed
from tsq.data.problems import Problem, ProblemSet
from tsq.errors import UserError
from tsq.paths import tsq_home

if TYPE_CHECKING:  # the spec sits above the data layer; this module only reads its fields
    from tsq.config.spec import DataSpec, SplitSpec

SourceFormat = Literal["math500", "gsm8k", "aime"]
Role = Literal["train", "eval", "test"]

DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DEFAULT_SPLITS: dict[Role, str] = {"train": "train", "eval": "test", "test": "test"}
# DeepSeek's recommended instruction for R1-style models on math: it asks for the boxed answer we grade.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

_LEVEL = re.compile(r"-?\d+")


@dataclass(frozen=True)
class DataRef:
    """Where one split's records come from: a hub dataset split or a local file."""

    path: str  # hub id, or a local file / directory
    config: str | None
    split: str  # hub split name; "train" for a local file (datasets' name for a single file's split)
    local: bool

    @property
    def label(self) -> str:
        return f"{self.path}:{self.split}" if not self.local else self.path


def is_local_data_file(source: str) -> bool:
    return Path(source).suffix.lower() in DATA_SUFFIXES


def resolve_split(data: DataSpec, role: Role) -> DataRef:
    """The data behind `data.train` or `data.eval` (see the module docstring)."""
    split = getattr(data, role).split
    field = f"data.{role}.split"
    if split is not None and is_local_data_file(split):
        return DataRef(_existing(split, field), None, "train", local=True)
    if is_local_data_file(data.source) or Path(data.source).is_dir():
        if split is not None:
            raise UserError(
                f"{field}: {split!r} is a split name, but data.source is a local file with a single split; "
                "leave it unset (train and eval become disjoint subsets) or name a .json/.jsonl/.parquet file"
            )
        return DataRef(_existing(data.source, "data.source"), None, "train", local=True)
    return DataRef(data.source, data.config, split or DEFAULT_SPLITS[role], local=False)


def _existing(path: str, field: str) -> str:
    if not Path(path).exists():
        raise UserError(f"{field}: {path}: file not found")
    return path


def load_records(ref: DataRef) -> list[dict[str, Any]]:
    """All rows of one split, through `datasets` (hub download or local json/jsonl/parquet)."""
    import datasets  # heavy import, only for real data

    # A failed load is reported once, as the UserError below: not also as datasets' own ERROR log lines and
    # half-drawn progress bars (a local file converts in well under a second anyway).
    verbosity = datasets.logging.get_verbosity()
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        if ref.local and Path(ref.path).is_file():
            builder = DATA_SUFFIXES[Path(ref.path).suffix.lower()]
            # local conversions are tsq's own state; hub downloads stay in the user's usual HF cache
            ds = datasets.load_dataset(
                builder, data_files=ref.path, split="train", cache_dir=str(tsq_home() / "datasets")
            )
        else:
            ds = datasets.load_dataset(ref.path, name=ref.config, split=ref.split)
    except Exception as exc:  # datasets raises many types (not found, offline, bad split, bad file)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"data.source: cannot load {ref.label} ({reason})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()
    return [dict(row) for row in ds]


def _columns(record: Mapping[str, Any]) -> dict[str, str]:
    return {name.lower(): name for name in record}


def detect_format(columns: Sequence[str]) -> SourceFormat:
    """Which schema a set of column names follows."""
    cols = {c.lower() for c in columns}
    if {"question", "answer"} <= cols:
        return "gsm8k"
    math_markers = {"level", "subject", "type", "unique_id"}
    if "problem" in cols and cols & math_markers and cols & {"answer", "solution"}:
        return "math500"
    if {"problem", "answer"} <= cols:
        return "aime"
    raise UserError(
        f"data.format: cannot tell the schema from columns {sorted(columns)}; expected MATH500 "
        "(problem, answer/solution, level), GSM8K (question, answer) or AIME (problem, answer)"
    )


def difficulty_of(value: Any) -> int | None:
    """MATH's "Level 3" (or 3, "3") → 3; missing or unparseable ("Level ?") → None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    match = _LEVEL.search(str(value))
    return int(match.group()) if match else None


def gsm8k_reference(answer: str) -> str:
    """The number after GSM8K's `####` marker, commas dropped (the whole answer when there is none)."""
    final = answer.rsplit("####", 1)[-1]
    return final.strip().replace(",", "")


def record_to_problem(
    record: Mapping[str, Any], fmt: SourceFormat, fallback_id: str, instruction: str = MATH_INSTRUCTION
) -> Problem:
    cols = _columns(record)

    def get(name: str) -> Any:
        return record[cols[name]] if name in cols else None

    if fmt == "gsm8k":
        question, answer = get("question"), gsm8k_reference(str(get("answer")))
    else:
        question = get("problem")
        answer = get("answer")
        if answer is None and fmt == "math500" and get("solution") is not None:
            answer = extract_boxed(str(get("solution")))
    if question is None or answer is None or not str(answer).strip():
        raise UserError(
            f"data.source: record {fallback_id} has no {fmt} question/answer (columns {list(record)})"
        )
    raw_id = get("unique_id") if get("unique_id") is not None else get("id")
    level = get("level") if get("level") is not None else get("difficulty")
    return Problem(
        id=str(raw_id) if raw_id is not None else fallback_id,
        question=f"{str(question).strip()}\n\n{instruction}" if instruction else str(question).strip(),
        answer=str(answer).strip(),
        difficulty=difficulty_of(level),
    )


def records_to_problems(
    records: list[dict[str, Any]],
    fmt: SourceFormat | Literal["auto"],
    id_prefix: str,
    instruction: str = MATH_INSTRUCTION,
) -> list[Problem]:
    if not records:
        raise UserError(f"data.source: {id_prefix} has no records")
    resolved: SourceFormat = detect_format(list(records[0])) if fmt == "auto" else fmt
    problems = [
        record_to_problem(r, resolved, f"{id_prefix}-{i}", instruction) for i, r in enumerate(records)
    ]
    duplicates = [pid for pid, count in Counter(p.id for p in problems).items() if count > 1]
    if duplicates:
        raise UserError(f"data.source: {id_prefix} has duplicate problem ids {sorted(duplicates)[:5]}")
    return problems


def choose_subset(
    problems: list[Problem], subset: SplitSpec, seed: int, exclude: frozenset[str], field: str
) -> list[Problem]:
    """`subset.ids` in the given order, else a seeded random `subset.n` (or all) not in `exclude`."""
    if subset.ids is not None:
        by_id = {p.id: p for p in problems}
        missing = [i for i in subset.ids if i not in by_id]
        if missing:
            raise UserError(f"{field}.ids: unknown problem ids {missing[:5]}")
        clash = [i for i in subset.ids if i in exclude]
        if clash:
            raise UserError(
                f"{field}.ids: {clash[:5]} are also eval problems; train and eval must be disjoint"
            )
        return [by_id[i] for i in subset.ids]
    order = list(problems)
    random.Random(seed).shuffle(order)
    pool = [p for p in order if p.id not in exclude]
    if not pool:
        raise UserError(f"{field}: no problems left (eval uses them all); set data.eval.n or ids")
    return pool if subset.n is None else pool[: subset.n]


def hf_problem_set(data: DataSpec, role: Role) -> ProblemSet:
    """The train or eval problem set of an HF-datasets source, graded with the math grader."""
    if data.format == "tiny":
        raise UserError("data.format: 'tiny' needs data.source: tiny")
    ref = resolve_split(data, role)
    problems = records_to_problems(
        load_records(ref),
        data.format,
        Path(ref.path).stem if ref.local else ref.split,
        MATH_INSTRUCTION if data.instruction is None else data.instruction,
    )
    # Splits drawn from the same data are made disjoint: eval draws first (its choice never depends on the
    # other settings), then the held-out test split, then train.
    exclude: frozenset[str] = frozenset()
    for earlier in {"eval": (), "test": ("eval",), "train": ("eval", "test")}[role]:
        if getattr(data, earlier) is not None and resolve_split(data, earlier) == ref:  # type: ignore[arg-type]
            drawn = choose_subset(problems, getattr(data, earlier), data.seed, exclude, f"data.{earlier}")
            exclude = exclude | {p.id for p in drawn}
    chosen = choose_subset(problems, getattr(data, role), data.seed, exclude, f"data.{role}")
    return ProblemSet(name=f"{ref.label}[{role}]", problems=tuple(chosen), grader="math")
