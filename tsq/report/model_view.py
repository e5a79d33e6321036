"""The sampler's own view of the front, for the model-based samplers that have one (`gp`, `botorch`): each
objective's GP posterior mean at the sweep's points, and the front of those means beside the front of the
measured values, so a user sees where the model and the noisy observations disagree.

The model is BoTorch's `SingleTaskGP` (Matérn 5/2 with one length scale per knob, a fitted noise term,
standardised outcomes) on the knobs scaled to the unit cube (log where the range is log), fitted to every
COMPLETE trial the sampler saw (early-stopped ones and seed replicates included; promoted runs, of another
fidelity, left out), as optuna-integration's qLogNEHVI fits it: for `botorch` it is the sampler's model of
the objectives; for `gp` it is the same family refitted, not Optuna's own GP object (a private API). Both
fronts hold the trials feasible as measured (the constraint is judged with its interval elsewhere in the
report). Needs the botorch extra; without it the section says so. benchmarks/search/ measured what it is worth
(docs/sweeps.md, "Choosing a sampler"): at 40 trials its front's gain over the measured one is small and
beyond the noise on both surrogates for one sampler of seven; at 10 trials the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tsq.method.metrics import format_value
from tsq.records import TrialRecord
from tsq.report.data import StudyData
from tsq.report.fidelity import label

MODEL_SAMPLERS = {"gp": "GPSampler", "botorch": "qLogNEHVI"}


@dataclass(frozen=True)
class ModelRow:
    number: int
    measured: tuple[float, ...]  # the objectives' values as measured, in the study's order
    mean: tuple[float, ...]  # the GP's posterior mean at the trial's point
    sd: tuple[float, ...]  # ... and its posterior sd (of the mean function, noise excluded)
    measured_front: bool  # feasible and undominated in measured values (Optuna's front, the report's ★)
    model_front: bool  # feasible and undominated in posterior means


@dataclass(frozen=True)
class ModelView:
    sampler: str
    objectives: tuple[tuple[str, str], ...]  # (metric, direction)
    rows: tuple[ModelRow, ...] = ()
    note: str | None = None  # why there is no model view

    @property
    def disagree(self) -> list[int]:
        return [r.number for r in self.rows if r.measured_front != r.model_front]


def _unit(trial: TrialRecord, names: list[str]) -> list[float]:
    out = []
    for name in names:
        dist, value = trial.distributions[name], float(trial.params[name])
        assert isinstance(dist, FloatDistribution | IntDistribution)
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            low, high, value = math.log(low), math.log(high), math.log(value)
        out.append(0.5 if high == low else (value - low) / (high - low))
    return out


def undominated(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Mask of the candidate rows no other candidate dominates (every column maximised)."""
    keep = np.zeros(len(values), bool)
    for i in np.flatnonzero(candidates):
        others = values[candidates]
        keep[i] = not np.any(np.all(others >= values[i], 1) & np.any(others > values[i], 1))
    return keep


def posterior(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A GP per column of `y` (rows: points `x` on the unit cube; every column maximised), BoTorch's
    SingleTaskGP with standardised outcomes as qLogNEHVI fits it: the posterior mean and sd of the mean
    function at the points `at`. Also scores the view in benchmarks/search/bench_samplers.py."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    train_x, train_y = (torch.tensor(v, dtype=torch.float64) for v in (x, y))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=train_y.shape[-1]))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    with torch.no_grad():
        post = model.posterior(torch.tensor(at, dtype=torch.float64))
        return post.mean.numpy(), post.variance.clamp_min(0).sqrt().numpy()


def model_view(data: StudyData) -> ModelView | None:
    """The view for a study run by a model-based sampler (the one recorded at launch); None for any other."""
    sampler = (data.record.sampler or {}).get("name")
    if sampler not in MODEL_SAMPLERS or data.metric_names is None:
        return None
    objectives = tuple(zip(data.metric_names, data.directions, strict=True))
    promoted = {t.number for t in data.promoted}
    seen = [t for t in data.trials
            if t.state == TrialState.COMPLETE and t.values and t.number not in promoted]  # fmt: skip
    if any(isinstance(d, CategoricalDistribution) for t in seen for d in t.distributions.values()):
        return ModelView(sampler, objectives, note="a categorical knob; the section models numeric ones only")
    names = sorted({n for t in seen for n in t.distributions})
    if len(seen) < 3 or not names:
        return ModelView(sampler, objectives, note="fewer than 3 completed trials: nothing to model yet")
    try:
        import botorch  # noqa: F401  (posterior's model)
    except ImportError:
        return ModelView(sampler, objectives, note="it needs the botorch extra (setup.sh --with-botorch)")
    sign = np.array([1.0 if d == "maximize" else -1.0 for d in data.directions])  # BoTorch maximises
    x = np.array([_unit(t, names) for t in seen])
    points = data.complete
    mean, sd = posterior(
        x, np.array([t.values for t in seen]) * sign, np.array([_unit(t, names) for t in points])
    )
    measured = np.array([t.values for t in points]) * sign
    feasible = np.array([t.feasible for t in points])
    on_measured, on_model = undominated(measured, feasible), undominated(mean, feasible)
    rows = tuple(
        ModelRow(t.number, tuple(measured[i] * sign), tuple(mean[i] * sign), tuple(sd[i]),
                 bool(on_measured[i]), bool(on_model[i]))
        for i, t in enumerate(points)
    )  # fmt: skip
    return ModelView(sampler, objectives, rows)


def model_view_lines(view: ModelView) -> list[str]:
    """The section "The sampler's view of the front"."""
    what = MODEL_SAMPLERS[view.sampler]
    lines = ["", f"## The sampler's view of the front ({view.sampler}: {what})", ""]
    if view.note is not None:
        return [*lines, f"No model view: {view.note}."]
    family = (
        "the sampler's own model of the objectives"
        if view.sampler == "botorch"
        else "BoTorch's GP of the same family refitted to the study, not Optuna's own GP object"
    )
    lines += [
        "Each objective's GP posterior mean (± its sd) at the trials on either front, beside the measured "
        f"value: {family}, fitted to every completed trial the sampler saw. Both fronts hold the trials "
        "feasible as measured. A trial on the measured front only may have been lifted there by evaluation "
        "or seed noise; one on the model's front only may have been pushed off it. The model smooths the "
        "noise it estimates; it is a second opinion, not a measurement.",
        "",
        "| trial | " + " | ".join(f"{label(m)} measured | {label(m)} model" for m, _ in view.objectives)
        + " | measured front | model front |",
        "|---|" + "---|---|" * len(view.objectives) + "---|---|",
    ]  # fmt: skip
    for row in view.rows:
        if not (row.measured_front or row.model_front):
            continue
        cells = []
        for j, (name, _) in enumerate(view.objectives):
            cells += [format_value(name, row.measured[j]), f"{format_value(name, row.mean[j])} ± "
                      f"{format_value(name, row.sd[j]).lstrip('+')}"]  # fmt: skip
        marks = ["★" if row.measured_front else "", "●" if row.model_front else ""]
        lines.append(f"| trial {row.number} | " + " | ".join(cells + marks) + " |")
    disagree = ", ".join(f"trial {n}" for n in view.disagree) or "none"
    lines += ["", f"- the two fronts disagree on: {disagree}"]
    return lines
