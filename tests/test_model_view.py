"""The report's "sampler's view of the front" (tsq/report/model_view.py) for gp/botorch studies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from records_util import add_trial, make_study

from tsq.config.space import SamplerSpec
from tsq.records import StudyRecord, TrialRecord
from tsq.report.data import study_data
from tsq.report.model_view import model_view, model_view_lines, undominated

SPIKE = 11  # the trial whose accuracy a noise spike lifted


def test_undominated_by_hand() -> None:
    values = np.array([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    candidates = np.array([True, True, True, True, False])  # the best one is not a candidate (infeasible)
    assert undominated(values, candidates).tolist() == [True, True, True, False, False]


def _study(sampler: str) -> optuna.Study:
    """Accuracy falls with alpha; length falls with alpha and grows with eta, so high-eta trials are dominated
    in truth. Every value carries noise of the size tsq measures (3 points, 1 token); trial SPIKE (alpha 0.55,
    eta 0.6: dominated) is measured 15 points above its trend, which puts it on the measured front; trial 1
    is infeasible."""
    study = make_study(None, StudyRecord(sampler={"name": sampler}), metric_names=["accuracy", "len_all"])
    rng = np.random.default_rng(0)
    dists = {"alpha": FloatDistribution(0.0, 1.0), "eta": FloatDistribution(0.0, 1.0)}
    grid = [[alpha, eta] for eta in (0.1, 0.6) for alpha in np.linspace(0.0, 1.0, 11).tolist()]
    points = [*grid[:SPIKE], [0.55, 0.6], *grid[SPIKE:]]
    for i, (alpha, eta) in enumerate(points):
        acc = 0.8 - 0.3 * alpha + rng.normal(0, 0.03) + (0.15 if i == SPIKE else 0.0)
        length = 60 - 30 * alpha + 15 * eta + rng.normal(0, 1.0)
        add_trial(
            study,
            TrialRecord(params={"alpha": alpha, "eta": eta}, distributions=dists, values=(acc, length)),
            constraint=1.0 if i == 1 else -1.0,
        )
    return study


def test_a_noise_spike_is_on_the_measured_front_not_the_models() -> None:
    view = model_view(study_data(_study("botorch")))
    assert view is not None and view.note is None and len(view.rows) == 23
    rows = {r.number: r for r in view.rows}
    spike = rows[SPIKE]
    assert spike.measured_front and not spike.model_front
    assert spike.mean[0] < spike.measured[0] - 0.05  # the model pulls it back towards its trend
    assert not rows[1].measured_front and not rows[1].model_front  # infeasible: on neither
    assert SPIKE in view.disagree
    text = "\n".join(model_view_lines(view))
    assert "## The sampler's view of the front (botorch: qLogNEHVI)" in text
    assert f"| trial {SPIKE} | " in text and f"trial {SPIKE}" in text.splitlines()[-1]


def test_only_model_based_samplers_have_a_view() -> None:
    assert model_view(study_data(_study("tpe"))) is None
    gp = model_view(study_data(_study("gp")))
    assert gp is not None and "refitted" in "\n".join(model_view_lines(gp))


def test_without_botorch_the_section_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "botorch" or m.startswith("botorch.")] or ["botorch"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    view = model_view(study_data(_study("gp")))
    assert view is not None and view.note is not None and "--with-botorch" in view.note
    assert model_view_lines(view)[-1].startswith("No model view: it needs the botorch extra")


def test_the_launch_records_the_sampler(tmp_path: Path) -> None:
    """What the report reads to decide whether the study has a model view."""
    from tsq.recipe import load_spec
    from tsq.study.lifecycle import create_or_load
    from tsq.study.storage import parse_storage_url

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml")
    gp = SamplerSpec(name="gp")
    spec = spec.model_copy(update={"study": spec.study.model_copy(update={"sampler": gp})})
    study = create_or_load(spec, parse_storage_url(f"sqlite:///{tmp_path / 's.db'}"), "s")
    assert StudyRecord.from_study(study).sampler == gp.model_dump()
