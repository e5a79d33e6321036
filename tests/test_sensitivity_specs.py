"""The one-knob sensitivity specs (sweeps/sensitivity-*.yaml) and the paper ablations extend the quickstart:
its pipeline, one knob varied over the quickstart's own search range end to end, the others at the paper's
point (tsq.config.knobs: `default_value`), read from the registry rather than copied here. No model is
loaded."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import pytest

from objectives.tokensqueeze.config import KNOBS
from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.knobs import default_value
from tsq.config.space import Categorical, FloatRange, grid_values
from tsq.config.spec import inherited
from tsq.method.select import n_positives
from tsq.recipe import load_spec

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
QUICKSTART = load_spec(SWEEPS / "quickstart.yaml")
SENSITIVITY = sorted(SWEEPS.glob("sensitivity-*.yaml"))
ABLATIONS = sorted(SWEEPS.glob("paper-ablations-*.yaml"))
TOKENSQUEEZE_KNOBS = ("alpha", "epsilon", "lambda", "eta")


def _same_pipeline(spec: Spec, but: tuple[str, ...] = ()) -> None:
    for section in inherited(Spec):
        if section not in but:
            assert getattr(spec, section) == getattr(QUICKSTART, section), section


def test_there_is_one_sensitivity_spec_per_tokensqueeze_knob() -> None:
    assert {p.stem.removeprefix("sensitivity-") for p in SENSITIVITY} == set(TOKENSQUEEZE_KNOBS)


@pytest.mark.parametrize("path", SENSITIVITY, ids=lambda p: p.stem)
def test_a_sensitivity_spec_varies_one_knob_over_the_quickstart_range(path: Path) -> None:
    spec = load_spec(path)
    _same_pipeline(spec)
    study = spec.study
    (name, entry), *others = study.searched.items()
    assert not others, f"exactly one knob varies, got {sorted(study.searched)}"
    assert path.stem == f"sensitivity-{name}"

    values = sorted(float(v) for v in grid_values(entry))
    span = QUICKSTART.study.search[name]
    assert isinstance(span, FloatRange)
    assert len(values) >= 4
    assert (values[0], values[-1]) == (span.low, span.high)
    # evenly spread in the range's own scale (log on a log range), to the rounding of the written values
    scale = math.log if span.log else float
    gaps = [scale(b) - scale(a) for a, b in pairwise(values)]
    assert max(gaps) / min(gaps) < 1.1, gaps

    for other in TOKENSQUEEZE_KNOBS:
        if other != name:
            assert study.fixed[other] == default_value(QUICKSTART, KNOBS[other]), other

    # one trial per value, each value once: a grid with nothing else to do
    assert study.sampler.name == "grid" and study.n_trials == len(values)
    assert not study.enqueue_defaults and study.constraint is None
    assert study.metrics == ["accuracy", "len_all"]


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_the_paper_ablations_run_on_the_quickstart_pipeline(path: Path) -> None:
    spec = load_spec(path)
    if path.stem.endswith("refinement"):
        # more rewrites per step than the quickstart, and SFT alone (its header says why); the quickstart's
        # training settings otherwise
        _same_pipeline(spec, but=("refinement", "training"))
        assert spec.training.loss == "sft"
        assert spec.training.model_copy(update={"loss": QUICKSTART.training.loss}) == QUICKSTART.training
    else:
        _same_pipeline(spec)
    (name, entry), *others = spec.study.searched.items()
    assert not others and isinstance(entry, Categorical) and KNOBS[name].kind == "categorical"
    assert set(spec.study.fixed) == set(TOKENSQUEEZE_KNOBS)
    assert spec.study.sampler.name == "grid" and spec.study.n_trials == len(entry.choices)


def test_the_selection_ablation_s_alpha_lets_q_dyn_differ_from_shortest() -> None:
    # at the paper's α 0.2 and N = 16, k = 1 for every c, and q-dyn's trial would repeat shortest's
    spec = load_spec(SWEEPS / "paper-ablations-selection.yaml")
    n, alpha = spec.sampling.n, float(spec.study.fixed["alpha"])
    assert all(n_positives(c, n, 0.2, "q-dyn") == 1 for c in range(1, n))
    assert any(n_positives(c, n, alpha, "q-dyn") > 1 for c in range(1, n))
