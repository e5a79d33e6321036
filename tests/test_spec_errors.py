"""A bad spec is one line naming the field; a misspelt key is named first, with the nearest valid name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tsq.errors import UserError
from tsq.recipe import load_spec

BASE = {
    "name": "t",
    "study": {
        "search": {"alpha": {"low": 0.2, "high": 1.0}},
        "objectives": [{"metric": "accuracy"}, {"metric": "len_all"}],
        "constraint": {"max_accuracy_drop": 0.05},
    },
}


def _error(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as info:
        load_spec(path)
    return str(info.value).removeprefix(f"{path}: ")


def test_a_misspelt_required_key_is_named_not_hidden_behind_field_required(tmp_path: Path) -> None:
    raw = {**BASE, "study": {**BASE["study"], "constraint": {"max_acuracy_drop": 0.05}}}
    assert _error(tmp_path, raw) == (
        "study.constraint.max_acuracy_drop: unknown key (did you mean max_accuracy_drop?) (and 1 more)"
    )


@pytest.mark.parametrize(
    ("patch", "line"),
    [
        ({"study": {**BASE["study"], "n_trails": 3}}, "study.n_trails: unknown key (did you mean n_trials?)"),
        (  # inside a mapping of knobs: the knob's range fields
            {"study": {**BASE["study"], "search": {"alpha": {"lwo": 0.2, "high": 1.0}}}},
            "study.search.alpha.lwo: unknown key (did you mean low?)",
        ),
        ({"trainng": {}}, "trainng: unknown key (did you mean training?)"),
        ({"zzz": 1}, "zzz: unknown key"),  # nothing close: no guess
    ],
)
def test_unknown_keys_get_the_nearest_valid_name(tmp_path: Path, patch: dict, line: str) -> None:
    assert _error(tmp_path, {**BASE, **patch}).split(" (and ")[0] == line.split(" (and ")[0]
