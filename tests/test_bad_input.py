"""Bad input through the real `tsq` console script: exit 2, one stderr line naming the problem, no traceback,
and the storage and the cache byte-identical afterwards.

Each case starts from `sweeps/smoke.yaml` (or a broken copy of it) in its own folder, next to a TSQ_HOME that
already holds a study ("existing", made from the smoke spec) and a cache entry. All cases run as concurrent
subprocesses once per module; each parametrized test then checks its own case's outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tsq.config.spec import merge_sections

REPO = Path(__file__).resolve().parents[1]
TSQ = [sys.executable, "-m", "tsq"]
SMOKE = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
SECRET = "hunter2-pw"  # a password in storage URLs: it must never be echoed back


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # the field, file or URL the one line must name
    patch: dict[str, Any] | None = None  # deep-merged into the smoke spec
    raw: bytes | None = None  # the spec file's bytes instead (malformed files)
    args: tuple[str, ...] = ("sweep", "launch", "{spec}", "--tracker", "none")
    files: dict[str, bytes] = field(default_factory=dict)  # extra files in the case folder
    setup: Callable[[Path], None] | None = None
    # a Typer usage error (a bad choice of an enumerated option): Typer's own rendering, several lines
    usage: bool = False


def _rows(*records: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


GOOD_ROWS = _rows(*({"problem": f"1+{i}", "answer": str(1 + i), "level": 1} for i in range(12)))

CASES = [
    # -- the spec file itself
    Case("yaml-malformed", "malformed YAML at line", raw=b"name: x\nmodel: [unclosed\n  path: tiny\n"),
    Case("yaml-not-a-mapping", "must be a mapping", raw=b"- alpha\n- epsilon\n"),
    Case("yaml-not-utf8", "spec.yaml", raw=b"name: \xff\xfe\xfa bad\n"),
    Case("spec-missing", "nope.yaml: spec file not found", args=("sweep", "launch", "nope.yaml")),
    Case(
        "spec-is-a-folder",
        "cannot read spec file",
        args=("sweep", "launch", "folder.yaml"),
        setup=lambda d: (d / "folder.yaml").mkdir(),
    ),
    # -- unknown keys, wrong types
    Case("unknown-section", "modle: unknown key", patch={"modle": {"path": "tiny"}}),
    Case("unknown-nested-key", "training.lr: unknown key", patch={"training": {"lr": 0.1}}),
    Case("unknown-study-key", "study.trials: unknown key", patch={"study": {"trials": 3}}),
    Case(
        "misspelt-nested-key",
        "study.constraint.max_acuracy_drop: unknown key (did you mean max_accuracy_drop?)",
        patch={"study": {"constraint": {"max_acuracy_drop": 0.05}}},
    ),
    # -- a knob on the command line is validated like one in the spec
    Case(
        "trial-knob-too-high",
        "--set alpha=1.5: Input should be less than or equal to 1",
        args=("trial", "run", "{spec}", "--set", "alpha=1.5"),
    ),
    Case(
        "trial-knob-negative",
        "--set eta=-1: Input should be greater than or equal to 0",
        args=("trial", "run", "{spec}", "--set", "eta=-1"),
    ),
    # -- a full fidelity (study.promote) that is not one: refused at launch, not after the sweep
    Case(
        "promote-sets-a-knob",
        "study.promote.params.alpha: sets alpha, a knob of study.search",
        patch={"study": {"promote": {"params": {"alpha": 0.5}}}},
    ),
    Case(
        "promote-unknown-field",
        "study.promote: training.max_stepz: unknown key (did you mean max_steps?)",
        patch={"study": {"promote": {"training": {"max_stepz": 240}}}},
    ),
    Case(
        "trial-knob-unknown",
        "--set alpah=0.5: alpah is not a knob of objectives.tokensqueeze:recipe (one of: alpha, epsilon,",
        args=("trial", "run", "{spec}", "--set", "alpah=0.5"),
    ),
    Case(
        "trial-knob-malformed",
        "--set alpha: write NAME=VALUE, e.g. --set alpha=0.5",
        args=("trial", "run", "{spec}", "--set", "alpha"),
    ),
    Case("wrong-type-int", "sampling.n", patch={"sampling": {"n": "many"}}),
    Case("wrong-type-section", "training", patch={"training": 5}),
    Case("wrong-type-bool", "refinement.enabled", patch={"refinement": {"enabled": "perhaps"}}),
    # -- values out of range: the four knobs, as the default point and as search ranges
    Case("alpha-above-1", "params.alpha", patch={"params": {"alpha": 1.5}}),
    Case("alpha-below-0", "params.alpha", patch={"params": {"alpha": -0.1}}),
    Case("epsilon-zero", "params.epsilon", patch={"params": {"epsilon": 0}}),
    Case("lambda-negative", "params.lambda", patch={"params": {"lambda": -1}}),
    Case("eta-negative", "params.eta", patch={"params": {"eta": -0.5}}),
    Case(
        "search-alpha-high", "study.search.alpha.high", patch={"study": {"search": {"alpha": {"high": 1.2}}}}
    ),
    Case(
        "search-epsilon-nonpositive",
        "study.search.epsilon.low",
        patch={"study": {"search": {"epsilon": {"low": -0.01, "log": False}}}},
    ),
    Case(
        "search-lambda-negative",
        "study.search.lambda.low",
        patch={"study": {"search": {"lambda": {"low": -2.0}}}},
    ),
    Case("search-eta-negative", "study.search.eta.low", patch={"study": {"search": {"eta": {"low": -1.0}}}}),
    Case(
        "search-empty-range",
        "study.search.alpha.low",
        patch={"study": {"search": {"alpha": {"low": 0.4, "high": 0.1}}}},
    ),
    Case(
        "search-empty-choices",
        "study.search.selection_variant.choices",
        patch={"study": {"search": {"selection_variant": {"type": "categorical", "choices": []}}}},
    ),
    Case(
        "search-unknown-param",
        "study.search.gamma",
        patch={"study": {"search": {"gamma": {"low": 0.0, "high": 1.0}}}},
    ),
    Case(
        "unknown-metric",
        "study.objectives.1.metric",
        patch={"study": {"objectives": [{"metric": "accuracy"}, {"metric": "speed"}]}},
    ),
    Case("unknown-sampler", "study.sampler.name", patch={"study": {"sampler": {"name": "cmaes"}}}),
    Case(
        "sampler-setting-of-another",
        "study.sampler: Value error, population_size applies to the nsga2 sampler(s), not tpe",
        patch={"study": {"sampler": {"name": "tpe", "population_size": 8}}},
    ),
    Case(
        "heartbeat-grace",
        "study.heartbeat.grace_period",
        patch={"study": {"heartbeat": {"interval": 10, "grace_period": 5}}},
    ),
    Case("steps-inverted", "data.min_steps", patch={"data": {"min_steps": 3, "max_steps": 2}}),
    # -- budgets <= 0
    Case("budget-n-trials-zero", "study.n_trials", patch={"study": {"n_trials": 0}}),
    Case("budget-timeout-negative", "study.timeout", patch={"study": {"timeout": -5}}),
    Case("budget-eval-tokens-zero", "evaluation.budget", patch={"evaluation": {"budget": 0}}),
    Case("budget-train-steps-zero", "training.max_steps", patch={"training": {"max_steps": 0}}),
    Case("budget-new-tokens-negative", "sampling.max_new_tokens", patch={"sampling": {"max_new_tokens": -1}}),
    # -- model and problem files
    Case("model-path-missing", "model.path", patch={"model": {"path": "./no/such/model"}}),
    Case("problems-missing", "data.source", patch={"data": {"source": "missing.jsonl"}}),
    Case(
        "problems-empty", "data.source", patch={"data": {"source": "empty.jsonl"}}, files={"empty.jsonl": b""}
    ),
    Case(
        "problems-unreadable",
        "data.source",
        patch={"data": {"source": "garbage.jsonl"}},
        files={"garbage.jsonl": b"\x00\x9f{not json\xff\n"},
    ),
    Case(
        "problems-no-columns",
        "data.format",
        patch={"data": {"source": "cols.jsonl"}},
        files={"cols.jsonl": _rows({"text": "1+1", "label": "2"}, {"text": "2+2", "label": "4"})},
    ),
    Case(
        "problems-eval-split-missing",
        "data.eval.split",
        patch={"data": {"source": "good.jsonl", "eval": {"split": "nope.jsonl"}}},
        files={"good.jsonl": GOOD_ROWS},
    ),
    # -- storage URLs
    Case(
        "storage-malformed",
        "storage",
        args=("sweep", "launch", "{spec}", "--storage", f"postgresql://tsq:{SECRET}@localhost:notaport/db"),
    ),
    Case(
        "storage-unreachable",
        "127.0.0.1:1",
        args=(
            "sweep",
            "launch",
            "{spec}",
            "--tracker",
            "none",
            "--storage",
            f"postgresql://tsq:{SECRET}@127.0.0.1:1/db",
        ),
    ),
    Case(
        "storage-not-a-url", "storage nonsense", args=("sweep", "launch", "{spec}", "--storage", "nonsense")
    ),
    Case(
        "storage-sqlite-is-a-folder",
        "storage sqlite",
        args=("sweep", "launch", "{spec}", "--storage", "sqlite:///{dir}/adir"),
        setup=lambda d: (d / "adir").mkdir(),
    ),
    Case("storage-env-unreachable", "127.0.0.1:1", args=("sweep", "status")),  # TSQ_STORAGE: see below
    # -- a study name that exists with other objectives or another search space
    Case(
        "study-other-objectives",
        "study existing",
        patch={"study": {"name": "existing", "objectives": [{"metric": "accuracy"}, {"metric": "auc"}]}},
    ),
    Case(
        "study-other-search-space",
        "study existing",
        patch={"study": {"name": "existing", "search": {"lambda": 1.0}}},
    ),
    Case(
        "study-other-direction",
        "study existing",
        patch={
            "study": {
                "name": "existing",
                "objectives": [{"metric": "accuracy", "direction": "minimize"}, {"metric": "len_all"}],
            }
        },
    ),
    Case("program-missing", "study.program", patch={"study": {"program": "no_such_module:run_trial"}}),
    Case(
        "program-function-missing",
        "study.program",
        patch={"study": {"program": "objectives.tokensqueeze:no_such_function"}},
    ),
    Case(
        "study-other-range",
        "study existing",
        patch={"study": {"name": "existing", "search": {"alpha": {"low": 0.3, "high": 0.9}}}},
    ),
    # -- other commands
    Case(
        "tracker-unknown",
        "--tracker",
        args=("sweep", "launch", "{spec}", "--tracker", "tensorboard"),
        usage=True,
    ),
    Case("spec-empty", "the spec is empty", raw=b""),
    Case(
        "max-length-too-small", "training.max_length: 8 is too small", patch={"training": {"max_length": 8}}
    ),
    Case("spec-comments-only", "the spec is empty", raw=b"# a sweep, one day\n"),
    Case("spec-null", "the spec is empty", raw=b"null\n"),
    Case("spec-empty-mapping", "the spec is empty", raw=b"{}\n"),
    # -- `extends:` (tsq.config.spec): the base file is resolved relative to the spec's folder
    Case("extends-missing", "nobase.yaml: spec file not found", patch={"extends": "nobase.yaml"}),
    Case(
        "extends-cycle",
        "base.yaml: extends: spec.yaml is already in this chain of extends",
        patch={"extends": "base.yaml"},
        files={"base.yaml": b"name: base\nextends: spec.yaml\n"},
    ),
    Case(
        "extends-not-a-mapping",
        "base.yaml: the spec must be a mapping of sections",
        patch={"extends": "base.yaml"},
        files={"base.yaml": b"- model\n- data\n"},
    ),
    Case(
        "extends-base-invalid",
        "base.yaml: training.lr: unknown key",
        patch={"extends": "base.yaml"},
        files={"base.yaml": b"name: base\ntraining: {lr: 0.1}\n"},
    ),
    Case(
        "gpus-absent",
        "no GPU is visible",
        args=("sweep", "launch", "{spec}", "--tracker", "none", "--gpus-per-worker", "1"),
    ),
    Case(
        "gpus-too-few",
        "only 2 GPU(s) visible",
        args=("sweep", "launch", "{spec}", "--tracker", "none", "--workers", "3", "--gpus-per-worker", "1"),
    ),
    Case("status-unknown-study", "--study nosuch", args=("sweep", "status", "--study", "nosuch")),
    Case(
        "report-no-complete-trial",
        "no completed trial",
        args=("report", "pareto", "--study", "existing", "--out", "{dir}/report"),
    ),
    Case(
        "baseline-model-missing",
        "model.path",
        patch={"model": {"path": "./no/such/model"}},
        args=("baseline", "{spec}"),
    ),
    Case(
        "baseline-problems-missing",
        "data.source",
        patch={"data": {"source": "missing.jsonl"}},
        args=("baseline", "{spec}"),
    ),
]
# These pass the spec and reach the launch's preflight (datasets, the tiny model, the storage, the trial
# program's imports): several seconds each, so they are marked slow.
SLOW = frozenset(
    {c.id for c in CASES if c.id.startswith(("problems-", "study-", "program-", "baseline-"))}
    | {"storage-unreachable", "storage-sqlite-is-a-folder"}
)
ENV_OVERRIDES = {
    "storage-env-unreachable": {"TSQ_STORAGE": f"postgresql://tsq:{SECRET}@127.0.0.1:1/db"},
    "gpus-absent": {"CUDA_VISIBLE_DEVICES": ""},  # no GPU visible, as on a CPU machine
    "gpus-too-few": {"CUDA_VISIBLE_DEVICES": "0,1"},
}


def _snapshot(home: Path) -> dict[str, bytes]:
    """The storage and cache files (and any new file beside them), by relative path."""
    files = [p for p in home.iterdir() if p.is_file()] + list((home / "cache").rglob("*"))
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(files) if p.is_file()}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, bytes]
    after: dict[str, bytes]


def _selected(request: pytest.FixtureRequest) -> set[str]:
    """The ids of the cases this session runs (so `-m "not slow"` skips the slow cases' work too)."""
    return {
        item.callspec.params["case"].id
        for item in request.session.items
        if "case" in getattr(getattr(item, "callspec", None), "params", {})
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TSQ_HOME holding the study "existing" (smoke spec, no trials run) and one cache entry."""
    from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
    from tsq.cache import Cache, content_key
    from tsq.study.lifecycle import create_or_load
    from tsq.study.storage import parse_storage_url

    home = tmp_path_factory.mktemp("bad_input_home")
    spec = Spec.model_validate(SMOKE)
    create_or_load(spec, parse_storage_url(f"sqlite:///{home / 'studies.db'}"), "existing")
    Cache(home / "cache").get_or_compute_json("samples", content_key(probe=1), lambda: {"kept": True})
    return home


def _run_case(case: Case, template: Path, work: Path) -> Outcome:
    folder = work / case.id
    home = folder / "home"
    shutil.copytree(template, home, symlinks=True)
    for name, data in case.files.items():
        (folder / name).write_bytes(data)
    if case.setup is not None:
        case.setup(folder)
    spec_path = folder / "spec.yaml"
    if case.raw is not None:
        spec_path.write_bytes(case.raw)
    else:
        spec_path.write_text(yaml.safe_dump(merge_sections(SMOKE, case.patch or {}), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TSQ_"))}
    env |= {"TSQ_HOME": str(home), "TSQ_NO_PROGRESS": "1", "WANDB_MODE": "disabled"}
    env |= ENV_OVERRIDES.get(case.id, {})
    args = [a.format(spec=spec_path, dir=folder) for a in case.args]
    before = _snapshot(home)
    proc = subprocess.run([*TSQ, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, before, _snapshot(home))


@pytest.fixture(scope="module")
def outcomes(
    template: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> dict[str, Outcome]:
    """The selected cases' outcomes, run as concurrent subprocesses."""
    selected = _selected(request)
    work = tmp_path_factory.mktemp("bad_input_cases")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c.id: pool.submit(_run_case, c, template, work) for c in CASES if c.id in selected}
        return {name: future.result() for name, future in futures.items()}


def test_the_table_is_large_and_distinct() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.id in SLOW else []) for c in CASES]
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    out = outcomes[case.id]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    if case.usage:
        assert "Invalid value" in out.stderr and case.expect in out.stderr, out.stderr[-3000:]
    else:
        assert len(lines) == 1, out.stderr[-3000:]
        assert lines[0].startswith("error: ")
        assert case.expect in lines[0]
    assert SECRET not in out.stderr + out.stdout
    assert out.after.keys() == out.before.keys(), "files appeared or vanished in TSQ_HOME"
    changed = [name for name in out.before if out.before[name] != out.after[name]]
    assert not changed, f"changed: {changed}"
