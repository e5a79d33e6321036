"""Which trials hold a study's `n_trials` slots, so that workers sharing a study never run one trial too many.

A worker counts the study's trials, then starts one; a peer can start one in between. On a real Slurm cluster
(tests/test_slurm.py) that ran 4 complete trials for n_trials 3, by either of two races:
- a peer's stale check fails a trial and queues its retry in two writes: a worker counting in between sees a
  free slot and starts a fresh trial, and the retry runs too;
- two workers both see the one WAITING retry: one takes it up, and Optuna's `ask()` gives the other a fresh
  trial instead.

The rule: a slot belongs to a root trial (any trial that is not a stale trial's retry), and roots take slots
in the order of their numbers. A root holds its slot while a trial of its retry chain is COMPLETE, RUNNING or
WAITING, or while its last trial is a stale FAIL whose retry is about to be queued (for `PENDING_RETRY_S` at
most, should the peer that failed it die before queuing). A trial may run only if fewer than `n_trials` roots
numbered below its own hold slots; otherwise it is surplus and ends before it samples anything. Replicates
(`tsq sweep confirm`, `tsq sweep promote`) have their own count and hold no slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
from optuna.trial import FrozenTrial, TrialState

from tsq.records import TrialRecord, is_replicate

# The peer that failed a stale trial queues its retry a moment later; past this, it died in between.
PENDING_RETRY_S = 30.0
_LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


@dataclass(frozen=True)
class RetryRule:
    """How the study's storage retries stale trials (`study.heartbeat`): `heartbeat` false means never."""

    heartbeat: bool
    max_retry: int


def root_of(trial: FrozenTrial) -> int:
    """The number of the trial whose slot `trial` runs in: the first trial of its retry chain."""
    first = Retry.retried_trial_number(trial)
    return trial.number if first is None else first


def _retry_pending(last: FrozenTrial, rule: RetryRule, now: datetime) -> bool:
    """`last` was failed by a peer's stale check (a trial tsq failed carries its error), its retry is still to
    be queued (within the retry budget), and it failed moments ago."""
    return (
        rule.heartbeat
        and last.state == TrialState.FAIL
        and TrialRecord.from_trial(last).error is None
        and len(Retry.retry_history(last)) < rule.max_retry
        and last.datetime_complete is not None
        and (now - last.datetime_complete).total_seconds() < PENDING_RETRY_S
    )


def held_slots(
    trials: Sequence[FrozenTrial], rule: RetryRule, now: datetime, below: int | None = None
) -> int:
    """How many roots hold a slot (only roots numbered below `below`, when given)."""
    chains: dict[int, list[FrozenTrial]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if not is_replicate(t):
            chains.setdefault(root_of(t), []).append(t)
    return sum(
        any(t.state in _LIVE for t in chain) or _retry_pending(chain[-1], rule, now)
        for root, chain in chains.items()
        if below is None or root < below
    )


def surplus(trials: Sequence[FrozenTrial], number: int, n_trials: int, rule: RetryRule) -> str | None:
    """Why trial `number` (one of `trials`, just started) must not run: the roots below its own already hold
    all `n_trials` slots; None when it may run. Replicates always may."""
    trial = next(t for t in trials if t.number == number)
    if is_replicate(trial):
        return None
    held = held_slots(trials, rule, datetime.now(), below=root_of(trial))
    if held < n_trials:
        return None
    return (
        f"surplus: {held} earlier trials already hold the study's n_trials={n_trials} (another worker "
        "started a trial at the same moment); this one ran nothing"
    )
