"""`tsq sweep promote`: does the reduced sweep's answer hold at full fidelity? Re-run the front (or the top K
by p_front), the recommended trial and M controls off the front at the fidelity `study.promote` describes, R
fresh seeds each, so the report can compare the two rankings (`tsq.report.fidelity`, docs/sweeps.md "Does
the answer hold at full fidelity").

The overlay is a partial spec merged over the spec's own sections (`tsq.study.objective.at_fidelity`) and
validated with the recipe's spec model before anything is written; it may not set a searched knob (each
point sets those) nor a field the spec model lacks. Promoted runs are replicates of their originals
(`tsq.records.Replicate` with `fidelity`, the overlay): enqueued WAITING trials of the same study, run here
(`tsq.study.confirm.run_replicates`: an interrupted promotion resumes where it stopped), never counted as
sweep trials (n_trials, the front, p_front, importances, the effects report's arms, `confirm`'s seed noise).
Their cache entries are shared with the sweep's wherever their inputs are the same (keys are content-based).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from pydantic import ValidationError

from tsq.config.spec import Spec, format_validation_error, inherited
from tsq.data.loading import Split
from tsq.errors import UserError
from tsq.records import Replicate, TrialRecord
from tsq.report.data import study_data
from tsq.report.table import front_trials, table_of
from tsq.study.confirm import open_targets, run_replicates
from tsq.study.objective import at_fidelity
from tsq.study.tracking import TrackerKind


def overlay_of(spec: Spec, source: str) -> dict[str, Any]:
    """The spec's `study.promote`, checked: set, pipeline sections only, no searched (or fixed) knob, and
    valid when merged over the spec (`at_fidelity`); UserError with one line naming the field otherwise."""
    where = f"{source}: study.promote"
    overlay = spec.study.promote
    if not overlay:
        raise UserError(
            f"{where}: not set; write the full fidelity to re-run at, e.g. "
            "{training: {max_steps: 240}, data: {train: {n: 800}}}"
        )
    sections = inherited(type(spec))
    for key in overlay:
        if key not in sections:
            known = ", ".join(sections)
            raise UserError(f"{where}.{key}: not a section a promotion can change (one of: {known})")
    for name in spec.study.search:
        knob = type(spec).knob(name)
        if knob is not None and _sets(overlay, knob.path):
            raise UserError(
                f"{where}.{'.'.join(knob.path)}: sets {name}, a knob of study.search; each promoted point "
                "keeps its own value (promote the knobs' fidelity, not the knobs)"
            )
    try:
        at_fidelity(spec, overlay)
    except ValidationError as err:
        raise UserError(format_validation_error(err, where, type(spec))) from None
    return dict(overlay)


def _sets(overlay: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether the overlay holds a value at `path` (merged key by key, it sets nothing else)."""
    node: Any = overlay
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def controls_of(
    trials: list[TrialRecord], targets: list[TrialRecord], count: int, seed: int
) -> list[TrialRecord]:
    """`count` COMPLETE trials that are not targets, drawn at random (seeded): dominated and infeasible points
    alike, so the comparison is not restricted to the winners. Trials stopped early (metrics of part of the
    problems) are left out. Fewer when the study has fewer."""
    taken = {t.number for t in targets}
    pool = [t for t in trials if t.number not in taken and not t.stopped and t.values is not None]
    if count <= 0 or not pool:
        return []
    picks = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return sorted((pool[int(i)] for i in picks), key=lambda t: t.number)


def plan(
    spec: Spec, points: list[TrialRecord], replicates: int, split: Split, overlay: dict[str, Any]
) -> list[Replicate]:
    """Runs of each point at the promoted fidelity: R fresh seeds (replicate r shifts both seeds by r, as
    `sweep confirm`'s; the original's own seeds would tie its full-fidelity run to the sweep's noise)."""
    return [
        Replicate(t.number, r, split,
                  {"training": spec.training.seed + 7919 * r, "evaluation": spec.evaluation.seed + 7919 * r},
                  overlay)
        for t in points
        for r in range(1, replicates + 1)
    ]  # fmt: skip


def promote(
    spec: Spec,
    source: str,
    storage_url: str | None,
    study_name: str | None,
    top: int | None,
    controls: int,
    replicates: int,
    split: Split,
    seed: int,
    tracker_kind: TrackerKind,
) -> tuple[optuna.Study, dict[str, list[int]], list[Replicate]]:
    """Check the overlay, enqueue the promoted runs the study lacks and run them here; returns the study, the
    points by role ("front", "recommended", "controls") and the runs."""
    overlay = overlay_of(spec, source)
    storage, study, targets = open_targets(spec, storage_url, study_name, top, split, "promote")
    data = study_data(study)
    pick = table_of(data).recommendation
    by_number = {t.number: t for t in data.complete}
    recommended = []
    if pick is not None and pick.pick is not None and pick.pick not in {t.number for t in targets}:
        recommended = [by_number[pick.pick]]  # the front check needs the recommended trial's full value
    chosen = targets + recommended
    off_front = [t for t in data.complete if t.number not in {f.number for f in front_trials(data)}]
    control_points = controls_of(off_front, chosen, controls, seed)
    points = chosen + control_points
    wanted = plan(spec, points, replicates, split, overlay)
    run_replicates(spec, storage, study, wanted, {t.number: t.params for t in points}, tracker_kind)
    roles = {
        "front": [t.number for t in targets],
        "recommended": [t.number for t in recommended],
        "controls": [t.number for t in control_points],
    }
    return study, roles, wanted
