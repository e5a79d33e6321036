"""GPU memory hand-offs between the generation engine and the HF stages (issue 29), checked on CPU.

On a GPU, a vLLM engine in sleep mode gives its memory to refinement scoring, the covering reference pass
and LoRA training, and takes it back at wake-up. Seeing a wrong hand-off fail needs CUDA and vLLM; what is
checked here is the orchestration that makes them right, on the real tiny model and the real HF backend:

- `Recording` is a thin wrapper around the real backend that logs every sleep, wake-up and generate call;
- the real model loaders of `tsq.engines.refine` and `tsq.engines.train` are wrapped to log each load with
the backend's
  state and keep a weak reference to the model, and the real `release_accelerator_memory` is wrapped to log
  each call.

What must hold: every HF model is loaded while the backend sleeps (a scoring model beside an awake engine
does not fit, defect 1); at every wake-up no model a stage loaded is alive and memory was released after the
last load (training returned with its trainer alive, defect 2); a warm trial sleeps once, for training (the
reference pass slept even with its cover cached, defect 7); a wake-up that fails closes the backend and the
worker's next trial builds a new one (defect 3).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

import tsq.engines.generation
import tsq.engines.refine
import tsq.engines.train
from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, run_trial
from tsq.cache import Cache
from tsq.engines.generation.base import BackendClosedError, BackendLifecycle, SamplingSettings
from tsq.engines.generation.hf import HFBackend
from tsq.recipe import load_spec
from tsq.study.objective import TrialObjective
from tsq.study.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
Event = tuple[Any, ...]


class Recording(BackendLifecycle):
    """The real backend, with every sleep, wake-up and generate call logged in `events` (`asleep()` is the
    lifecycle's own, so it goes through these `sleep` and `wake_up`)."""

    def __init__(self, inner: HFBackend, events: list[Event], loaded: list[weakref.ref]) -> None:
        self.inner, self.events, self.loaded = inner, events, loaded
        self.asleep_now = False

    def __getattr__(self, name: str) -> Any:  # name, tokenizer, calls: the real backend's
        return getattr(self.inner, name)

    def generate(self, prompts: list[str], settings: SamplingSettings, adapter=None, keys=None):
        self.events.append(("generate", self.asleep_now))
        return self.inner.generate(prompts, settings, adapter=adapter, keys=keys)

    def sleep(self) -> None:
        self.events.append(("sleep",))
        self.asleep_now = True
        self.inner.sleep()

    def wake_up(self) -> None:
        alive = sum(ref() is not None for ref in self.loaded)
        self.events.append(("wake", alive))
        self.asleep_now = False
        self.inner.wake_up()

    def _do_close(self) -> None:
        self.inner.close()


@pytest.fixture
def recorded(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Recording:
    events: list[Event] = []
    loaded: list[weakref.ref] = []
    backend = Recording(HFBackend(tiny_model_dir, batch_size=64, progress=False), events, loaded)
    for module in (tsq.engines.refine, tsq.engines.train):
        real_load, real_release = module.load_causal_lm, module.release_accelerator_memory

        def load(*args: Any, _module=module, _real=real_load, **kwargs: Any) -> Any:
            model = _real(*args, **kwargs)
            events.append(("load", _module.__name__, backend.asleep_now))
            loaded.append(weakref.ref(model))
            return model

        def release(_real=real_release) -> None:
            _real()
            events.append(("release",))

        monkeypatch.setattr(module, "load_causal_lm", load)
        monkeypatch.setattr(module, "release_accelerator_memory", release)
    return backend


def _smoke(tmp_path: Path) -> Any:
    raw = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def _released_before_each_wake(events: Sequence[Event]) -> bool:
    """After each load, a release comes before the next wake-up."""
    pending = False
    for event in events:
        if event[0] == "load":
            pending = True
        elif event[0] == "release":
            pending = False
        elif event[0] == "wake" and pending:
            return False
    return True


@pytest.mark.slow
def test_models_load_asleep_and_are_gone_at_wake_up(recorded: Recording, tmp_path: Path) -> None:
    spec = _smoke(tmp_path)
    cache = Cache(spec.cache_dir)
    run_trial(spec, TrialParams(), TrialContext(cache=cache, out_dir=tmp_path / "t1", backend=recorded))
    events = recorded.events
    loads = [e for e in events if e[0] == "load"]
    # refinement scoring, the covering reference pass and training each loaded a model, all asleep
    assert [e[1] for e in loads] == ["tsq.engines.refine", "tsq.engines.train", "tsq.engines.train"], events
    assert all(asleep for _, _, asleep in loads), events
    # nothing generated while asleep, and at each wake-up every loaded model is gone and memory released
    assert not [e for e in events if e == ("generate", True)], events
    wakes = [e for e in events if e[0] == "wake"]
    assert len(wakes) == 3 and all(alive == 0 for _, alive in wakes), events
    assert _released_before_each_wake(events), events

    # a warm trial: candidates and reference cover cached, so one sleep (training) and one model load
    recorded.events.clear()
    params = TrialParams(alpha=0.3, epsilon=0.01, lam=0.5, eta=0.2)
    run_trial(spec, params, TrialContext(cache=cache, out_dir=tmp_path / "t2", backend=recorded))
    kinds = [e[0] for e in recorded.events if e[0] != "generate"]
    assert kinds == ["sleep", "load", "release", "wake"], recorded.events
    assert [e for e in recorded.events if e[0] == "wake"] == [("wake", 0)]


class FailingWake(HFBackend):
    """The real HF backend whose wake-up fails the way a vLLM engine's can (a thin fault injection: it
    reports memory released at sleep, as vLLM's sleep mode does, and raises at wake-up)."""

    def _do_sleep(self) -> bool:
        return True

    def _do_wake_up(self) -> None:
        raise RuntimeError("wake-up failed")


@pytest.mark.slow
def test_a_failed_wake_up_closes_the_backend_and_the_next_trial_builds_a_new_one(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _smoke(tmp_path)
    built: list[HFBackend] = []

    def factory(spec: Any, model_path: Path, **kwargs: Any) -> HFBackend:
        built.append(FailingWake(model_path, progress=False))
        return built[-1]

    # the engine the TokenSqueeze recipe opens for the worker (objectives/tokensqueeze/recipe.py, open_engine)
    monkeypatch.setattr(tsq.engines.generation, "backend_from_spec", factory)
    study = optuna.create_study(directions=["maximize", "minimize"])
    objective = TrialObjective(spec, Tracker("none", study.study_name, "tsq"), "memory")
    first = objective.backend()
    with pytest.raises(RuntimeError, match="wake-up failed"), first.asleep():
        pass
    assert first.closed and not first.sleeping
    with pytest.raises(BackendClosedError):
        first.generate(["x"], SamplingSettings(max_new_tokens=2))
    second = objective.backend()  # the next trial's
    assert second is not first and not second.closed and len(built) == 2
    objective.close()
