"""`extends:` in spec files (tsq.config.spec.load_spec): the base's pipeline sections are inherited and the
child's
merge over them key by key; `name` and `study` never are; chains resolve; cycles, missing and non-mapping
bases are one-line UserErrors naming the child file and its `extends` field."""

from __future__ import annotations

from pathlib import Path

import pytest

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.spec import inherited, merge_sections
from tsq.errors import UserError
from tsq.recipe import load_spec

BASE = """\
name: base
data:
  train: {n: 40}
  eval: {n: 20}
  max_steps: 3
sampling: {n: 16, temperature: 1.0}
refinement: {k: 4, window: 16}
training:
  beta: 1.0
  learning_rate: 0.001
  lora: {r: 8, target_modules: [q_proj, v_proj]}
params: {alpha: 0.6, eta: 0.25}
study:
  search:
    alpha: {low: 0.2, high: 1.0}
  constraint: {max_accuracy_drop: 0.05}
  n_trials: 8
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_child_merges_over_the_base_key_by_key(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(
        tmp_path,
        "child.yaml",
        "name: child\nextends: base.yaml\nsampling: {temperature: 0.6}\ntraining: {lora: {r: 4}}\n",
    )
    spec = load_spec(child)
    assert spec.sampling.n == 16 and spec.sampling.temperature == 0.6  # one key replaced, its sibling kept
    assert spec.training.beta == 1.0 and spec.training.learning_rate == 0.001
    # two levels down: r replaced, the base's target_modules kept
    assert spec.training.lora.r == 4 and spec.training.lora.target_modules == ["q_proj", "v_proj"]
    assert spec.data.train.n == 40 and spec.data.max_steps == 3
    assert spec.params.alpha == 0.6 and spec.params.eta == 0.25
    assert spec.refinement.k == 4 and spec.refinement.window == 16


def test_lists_scalars_and_null_in_the_child_replace(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(
        tmp_path,
        "child.yaml",
        "name: child\nextends: base.yaml\n"
        "training: {lora: {target_modules: [o_proj]}}\n"  # a list replaces, it is not concatenated
        "params: {alpha: 1.0}\n"
        "data: {train: {n: null}}\n",  # null replaces too: all problems
    )
    spec = load_spec(child)
    assert spec.training.lora.target_modules == ["o_proj"] and spec.training.lora.r == 8
    assert spec.params.alpha == 1.0 and spec.params.eta == 0.25
    assert spec.data.train.n is None and spec.data.eval.n == 20


def test_name_and_study_are_not_inherited(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(
        tmp_path, "child.yaml", "extends: base.yaml\nstudy: {search: {eta: {low: 0.0, high: 1.0}}}\n"
    )
    spec = load_spec(child)
    assert spec.name == Spec().name  # the default, not "base"
    # the child's study alone: no alpha range, no constraint, the default n_trials
    assert set(spec.study.search) == {"eta"}
    assert spec.study.constraint is None and spec.study.n_trials == Spec().study.n_trials
    # without a study section of its own the child gets the default one, not the base's
    bare = load_spec(_write(tmp_path, "bare.yaml", "name: bare\nextends: base.yaml\n"))
    assert bare.study == Spec().study and bare.sampling.n == 16


def test_inherited_is_every_section_but_name_and_study() -> None:
    # a section added to Spec is inherited unless someone decides otherwise here
    assert set(inherited(Spec)) == set(Spec.model_fields) - {"name", "study"}


def test_a_chain_resolves_nearest_first_and_paths_are_relative_to_each_file(tmp_path: Path) -> None:
    _write(tmp_path, "shared/base.yaml", BASE)
    _write(
        tmp_path, "shared/mid.yaml", "name: mid\nextends: base.yaml\nsampling: {n: 8}\nparams: {eta: 0.75}\n"
    )
    child = _write(
        tmp_path, "sweeps/child.yaml", "name: child\nextends: ../shared/mid.yaml\nparams: {eta: 1.0}\n"
    )
    spec = load_spec(child)
    assert spec.name == "child"
    assert spec.sampling.n == 8 and spec.sampling.temperature == 1.0  # mid over base
    assert spec.params.eta == 1.0 and spec.params.alpha == 0.6  # child over mid over base
    assert spec.training.beta == 1.0


def test_merge_sections_leaves_its_inputs_alone() -> None:
    base = {"training": {"lora": {"r": 8, "alpha": 16}}, "params": {"alpha": 0.2}}
    child = {"training": {"lora": {"r": 4}}, "params": None}
    merged = merge_sections(base, child)
    assert merged == {"training": {"lora": {"r": 4, "alpha": 16}}, "params": None}
    assert base == {"training": {"lora": {"r": 8, "alpha": 16}}, "params": {"alpha": 0.2}}


def _error(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_cycle_is_one_line_naming_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    _write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    message = _error(tmp_path / "a.yaml")
    assert message.startswith(f"{tmp_path / 'a.yaml'}: extends: ")
    assert "cycle" in message
    assert "cycle" in _error(_write(tmp_path, "self.yaml", "name: s\nextends: self.yaml\n"))


def test_a_missing_base_names_the_child_and_the_base(tmp_path: Path) -> None:
    child = _write(tmp_path, "child.yaml", "name: child\nextends: nope.yaml\n")
    assert _error(child) == f"{child}: extends: {tmp_path / 'nope.yaml'}: spec file not found"


def test_a_missing_base_deeper_in_the_chain_names_the_whole_chain(tmp_path: Path) -> None:
    _write(tmp_path, "mid.yaml", "name: mid\nextends: gone.yaml\n")
    child = _write(tmp_path, "child.yaml", "name: child\nextends: mid.yaml\n")
    message = _error(child)
    assert message.startswith(f"{child}: extends: {tmp_path / 'mid.yaml'}: extends: ")
    assert message.endswith("gone.yaml: spec file not found")


@pytest.mark.parametrize(
    ("base", "expect"),
    [
        ("- alpha\n- epsilon\n", "the spec must be a mapping of sections, got list"),
        ("", "the spec is empty"),
        ("name: b\ntraining: {lr: 0.1}\n", "base.yaml: training.lr: unknown key"),  # invalid on its own
    ],
    ids=["list", "empty", "invalid"],
)
def test_a_bad_base_names_the_child_and_the_base(tmp_path: Path, base: str, expect: str) -> None:
    _write(tmp_path, "base.yaml", base)
    child = _write(tmp_path, "child.yaml", "name: child\nextends: base.yaml\n")
    message = _error(child)
    assert message.startswith(f"{child}: extends: {tmp_path / 'base.yaml'}: ")
    assert expect in message


@pytest.mark.parametrize("value", ["[base.yaml]", "''", "3"])
def test_extends_must_be_a_path(tmp_path: Path, value: str) -> None:
    child = _write(tmp_path, "child.yaml", f"name: child\nextends: {value}\n")
    assert (
        _error(child) == f"{child}: extends: must be the path of a spec file (relative to this file's folder)"
    )


def test_the_child_s_own_errors_still_name_the_child(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", BASE)
    child = _write(tmp_path, "child.yaml", "name: child\nextends: base.yaml\nparams: {alpha: 1.5}\n")
    assert _error(child).startswith(f"{child}: params.alpha: ")
