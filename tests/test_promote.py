"""`tsq sweep promote` and the report's section "At full fidelity": the overlay's checks, the promoted runs'
records and exclusions, the rank statistics on hand-computed values, and a study end to end through the CLI
with a synthetic program whose full-fidelity values are a known monotone (τ = 1) or reversed (τ = −1)
function of the reduced ones (tests/programs.py `fidelity_trial`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from programs import REDUCED_STEPS, env_with_tests_on_path, fidelity_spec, synthetic_spec
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.errors import UserError
from tsq.method.stats import kendall_tau_b, rank_transfer, split_halves
from tsq.recipe import load_spec
from tsq.records import FORMAT_ATTR, Replicate, StudyRecord, TrialRecord, enqueue_replicate, is_replicate
from tsq.report.data import StudyData, study_data
from tsq.report.effects import _eval_trials
from tsq.report.fidelity import FAILS, HOLDS, UNDECIDED, MetricTransfer, judge, overall
from tsq.report.importance import usable_trials
from tsq.report.table import front_trials, table_of
from tsq.study.promote import plan
from tsq.study.worker import state_counts

# -- the statistics, by hand -------------------------------------------------------------------------------


def test_tau_b_on_hand_pairs() -> None:
    # 4 points: 6 pairs; (1,2)(1,3)(1,4)(2,4)(3,4) concordant, (2,3) discordant: (5 − 1) / 6
    assert kendall_tau_b([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(4 / 6)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # a tie in x: pair (1,2) counts in neither numerator nor x's untied pairs: 5 concordant of 5 untied in x,
    # 6 untied in y: 5 / √(5 · 6)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / (5 * 6) ** 0.5)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None and kendall_tau_b([1], [2]) is None


def test_split_halves_and_the_noise_ceiling() -> None:
    assert split_halves([1.0, 2.0, 3.0, 6.0]) == (2.0, 4.0) and split_halves([1.0]) is None
    # full means keep the reduced order (τ = 1); the halves swap points 2 and 3 in half B: of the 3 pairs,
    # (1,2) and (1,3) concordant, (2,3) discordant: ceiling (2 − 1) / 3
    transfer = rank_transfer([1.0, 2.0, 3.0], [[1.0, 1.0], [2.0, 3.1], [3.0, 2.9]], n_resamples=200, seed=0)
    assert transfer.tau.value == pytest.approx(1.0) and transfer.ceiling.value == pytest.approx(1 / 3)
    assert transfer.gap.value == pytest.approx(1 / 3 - 1) and transfer.n_split == 3
    lo, hi = transfer.tau.lo, transfer.tau.hi
    assert lo is not None and hi is not None and lo <= 1.0 <= hi


def _transfer(tau: float, ceiling: float, lo: float, gap_lo: float, n: int = 6) -> MetricTransfer:
    from tsq.method.stats import Estimate, RankTransfer

    t = RankTransfer(n, n, Estimate(tau, lo, tau, None), Estimate(ceiling, ceiling - 0.1, ceiling, None),
                     Estimate(ceiling - tau, gap_lo, ceiling - tau, None))  # fmt: skip
    verdict, reason = judge(t)
    return MetricTransfer("len_all", "minimize", t, verdict, reason)


def test_the_verdict_rule() -> None:
    holds, fails = _transfer(0.9, 1.0, 0.5, -0.2), _transfer(-0.8, 1.0, -1.0, 1.2)
    undecided = _transfer(0.2, 0.9, -0.4, -0.3)
    assert (holds.verdict, fails.verdict, undecided.verdict) == ("holds", "fails", "undecided")
    accuracy = MetricTransfer("accuracy", "maximize", fails.transfer, "fails", "")
    assert overall([holds], "clear") == HOLDS
    assert overall([holds, accuracy], "clear") == "holds for Len-A only"
    assert overall([accuracy], None) == FAILS and overall([undecided], None) == UNDECIDED
    assert overall([holds], "off") == FAILS  # the recommended trial fell off the full front
    # a ceiling whose interval reaches 0: seed noise hides the full ranking, nothing is measured
    noisy = _transfer(0.9, 0.05, 0.5, -0.2)
    assert noisy.verdict == "undecided" and "seed noise" in noisy.reason


# -- the overlay, the records, the exclusions --------------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output + (str(result.exception) if result.exit_code else "")


@pytest.mark.parametrize(
    ("promote", "message"),
    [
        ({"params": {"alpha": 0.3}}, "study.promote.params.alpha: sets alpha, a knob of study.search"),
        ({"training": {"max_stepz": 80}}, "study.promote: training.max_stepz: unknown key (did you mean"),
        ({"study": {"n_trials": 3}}, "study.promote.study: not a section a promotion can change"),
        ({"training": {"max_steps": -1}}, "study.promote: training.max_steps:"),
        (None, "study.promote: not set"),
    ],
)
def test_a_bad_overlay_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, promote: dict | None, message: str
) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))
    spec = synthetic_spec(tmp_path / "s.yaml", "bad", 2, promote=promote)
    db = tmp_path / "s.db"
    result = CliRunner().invoke(app, ["sweep", "promote", str(spec), "--storage", f"sqlite:///{db}"])
    # a UserError: the console script prints it as one line and exits 2 (the subprocess case below)
    assert isinstance(result.exception, UserError) and message in str(result.exception), result.output
    assert len(str(result.exception).splitlines()) == 1
    assert not db.exists() and not (tmp_path / "home").exists()


def test_a_searched_knob_in_the_overlay_exits_2_through_the_console_script(tmp_path: Path) -> None:
    spec = synthetic_spec(tmp_path / "s.yaml", "bad", 2, promote={"params": {"eta": 1.0}})
    db = tmp_path / "s.db"
    env = {**env_with_tests_on_path(), "TSQ_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "tsq", "sweep", "promote", str(spec), "--storage", f"sqlite:///{db}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "study.promote.params.eta: sets eta, a knob of study.search" in lines[0]
    assert not db.exists()


def test_a_promoted_run_is_a_replicate_with_its_fidelity_and_old_records_read_unchanged() -> None:
    rep = Replicate(3, 1, "eval", {"training": 7919}, {"training": {"max_steps": 80}})
    attrs = TrialRecord(replicate=rep).to_attrs()
    assert attrs["replicate_fidelity"] == {"training": {"max_steps": 80}} and attrs[FORMAT_ATTR] == 3
    assert TrialRecord.from_attrs(attrs).replicate == rep and rep.promoted
    old = {"replicate_of": 3, "replicate": 1, "split": "eval", FORMAT_ATTR: 2}  # a format-2 replicate
    assert (
        TrialRecord.from_attrs(old).replicate == Replicate(3, 1, "eval")
        and not Replicate(3, 1, "eval").promoted
    )


def test_promoted_runs_are_no_sweep_trials() -> None:
    done = TrialState.COMPLETE
    sweep = [TrialRecord(number=n, params={"alpha": 0.1 * n}, values=(0.5, 100.0 - n),
                         metrics={"accuracy": 0.5, "len_all": 100.0 - n}) for n in range(3)]  # fmt: skip
    at_80 = Replicate(2, 1, "eval", {}, {"training": {"max_steps": 80}})
    promoted = TrialRecord(number=3, params={"alpha": 0.2}, values=(0.9, 10.0), state=done,
                           metrics={"accuracy": 0.9, "len_all": 10.0}, replicate=at_80)  # fmt: skip
    record = StudyRecord(objectives=["accuracy", "len_all"])
    data = StudyData("s", ("maximize", "minimize"), None, record, (*sweep, promoted))
    assert [t.number for t in data.complete] == [0, 1, 2] and data.replicates == []
    assert [t.number for t in data.promoted] == [3]
    assert [t.number for t in front_trials(data)] == [2]  # the promoted run would dominate: not a point
    assert [t.number for t in usable_trials(data)] == [0, 1, 2]
    assert [t.number for t in _eval_trials(data, [])] == [0, 1, 2]  # no arm's seed in `report effects`
    assert table_of(data).replicated == []  # no seed replicate of trial 2: another fidelity


# -- end to end ------------------------------------------------------------------------------------------


def _cli(*args: str) -> str:
    code, out = _run(*args)
    assert code == 0, out
    return out


def test_monotone_full_fidelity_holds_and_a_reversed_eta_effect_does_not(
    tmp_path: Path, tsq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tsq_home))
    monkeypatch.setenv("TSQ_NO_PROGRESS", "1")
    url = f"sqlite:///{tmp_path / 'p.db'}"
    name = f"fid-{os.getpid()}-{tmp_path.name}"[:60]
    spec = fidelity_spec(tmp_path / "p.yaml", name, {"data": {"train": {"n": 16}}})
    promote = ("sweep", "promote", str(spec), "--storage", url, "--controls", "1", "--replicates", "2",
               "--tracker", "none")  # fmt: skip
    _cli("sweep", "launch", str(spec), "--storage", url, "--tracker", "none", "--no-summary")
    # as an interrupted promotion leaves it: one run enqueued (WAITING), none run; promote takes it up
    study = optuna.load_study(study_name=name, storage=url)
    first = front_trials(study_data(study))[0]
    (queued,) = plan(load_spec(spec), [first], 1, "eval", {"data": {"train": {"n": 16}}})
    enqueue_replicate(study, first.params, queued)
    out = _cli(*promote)
    # the front: the shortest trial at each η (α 0.5); one control off it, drawn from the α 0.1 trials
    assert "promoted trials (front [" in out and "controls [" in out
    study = optuna.load_study(study_name=name, storage=url)
    promoted = [t for t in study.get_trials() if is_replicate(t)]
    assert len(promoted) == 2 * 4 and all(t.state == TrialState.COMPLETE for t in promoted)
    assert all(t.user_attrs["replicate_fidelity"] == {"data": {"train": {"n": 16}}} for t in promoted)
    assert state_counts(study.get_trials())[TrialState.COMPLETE] == 6  # the sweep's own, as before
    # a second promote adds nothing, and a relaunch runs no sweep trial: promoted runs are no sweep trials
    _cli(*promote)
    _cli("sweep", "launch", str(spec), "--storage", url, "--tracker", "none", "--no-summary")
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 6 + 8
    md = _report(tmp_path / "r1", url, name)
    assert f"**Verdict: {HOLDS}**" in md
    assert "| Acc | 4 | +1.00 [+1.00, +1.00] | +1.00 [+1.00, +1.00] | +0.00 [+0.00, +0.00] | holds: " in md
    assert "| Len-A | 4 | +1.00 [+1.00, +1.00] |" in md
    assert "(clearly on the front)" in md and "lost by choosing at reduced fidelity 0.0%" in md
    assert f"Verdict: {HOLDS}" in _cli("sweep", "status", "--storage", url, "--study", name)

    # promoted to 4× the training steps, η's effect on accuracy flips: τ = −1 there, Len-A still holds
    overlay = {"training": {"max_steps": 4 * REDUCED_STEPS}}
    fidelity_spec(spec, name, overlay)
    _cli(*promote)
    md = _report(tmp_path / "r2", url, name)
    assert "| Acc | 4 | -1.00 [-1.00, -1.00] | +1.00 [+1.00, +1.00] | +2.00 [+2.00, +2.00] | fails: " in md
    assert "| Len-A | 4 | +1.00 [+1.00, +1.00] |" in md
    assert "| eta | Acc | +1.00 [+1.00, +1.00] | -1.00 [-1.00, -1.00] | opposite sign |" in md
    assert "**Verdict: holds for Len-A only**" in md  # the recommended trial (η 0) stays on the front
    assert "8 runs at another study.promote left out" in md


def _report(folder: Path, url: str, name: str) -> str:
    _cli("report", "pareto", "--storage", url, "--study", name, "--out", str(folder))
    md = (folder / "pareto.md").read_text()
    assert "## At full fidelity" in md and (folder / "records" / "baseline-promoted.jsonl").is_file()
    return md
