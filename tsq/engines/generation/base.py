"""The generation interface every backend implements, and what all backends share.

- **Independent samples.** Sample j of a prompt is drawn from its own random stream, seeded by
  `sample_seed(settings.seed, key, j)`, where `key` names the prompt (a problem id, when the caller passes
  `keys`). So a sample depends neither on which batch it fell in nor on the other prompts of the call, and two
  problems with the same prompt text get different samples when their ids differ.
- **Lifecycle.** `close()` frees the model (and stops vLLM's engine process); it is idempotent, and backends
  are context managers (`with backend_from_spec(...) as backend:`).
- **Sleep.** `sleep()` / `wake_up()` give the accelerator's memory back while another stage (refinement
  scoring, the reference pass, training) needs it; on CPU they do nothing. `asleep()` wraps a block in both.
  A backend whose memory can come back wrong (vLLM's sleep mode) checks a greedy probe at wake-up. A wake-up
  that fails closes the backend: a half-awake engine (vLLM keeps its scheduler paused) would queue the next
  trial's requests forever, so the owner must see it closed and build a new one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1  # completions per prompt
    temperature: float = 0.6  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()  # stop strings (refinement stops at the step boundary "\n\n")


@dataclass(frozen=True)
class Completion:
    text: str  # decoded completion (stop string included when one fired)
    token_ids: tuple[int, ...]  # generated token ids (no prompt, no padding)
    finish_reason: Literal["stop", "length"]


class BackendClosedError(RuntimeError):
    """generate() on a backend after close()."""


class WakeUpProbeMismatch(RuntimeError):
    """A greedy probe's tokens changed across sleep/wake-up: the engine's memory came back wrong."""


class Backend(Protocol):
    """Generates completions for already-formatted prompt strings, optionally through a LoRA adapter."""

    name: str
    tokenizer: Any  # the model's tokenizer, as the backend loaded it

    @property
    def closed(self) -> bool:
        """close() ran, or a failed wake-up closed it: a new backend is needed."""
        ...

    def generate(
        self,
        prompts: list[str],
        settings: SamplingSettings,
        adapter: Path | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        """One list of `settings.n` completions per prompt, in prompt order.

        `keys` are stable, distinct identifiers of the prompts (problem ids); sample j of prompt i is seeded
        by (settings.seed, keys[i], j). Without keys a prompt is named by its text (see `prompt_keys`).
        """
        ...

    def close(self) -> None:
        """Free the model and any engine process; idempotent. generate() afterwards raises."""
        ...

    def sleep(self) -> None:
        """Release accelerator memory until wake_up() (no-op where there is nothing to release)."""
        ...

    def wake_up(self) -> None:
        """Undo sleep(); generate() also wakes a sleeping backend."""
        ...

    def asleep(self) -> Any:
        """Context manager: sleep for the block, wake up after it."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def sample_seed(seed: int, key: str, index: int) -> int:
    """The seed of sample `index` of the prompt named `key`: 63 bits of SHA-256 over the three.

    63 bits so that every consumer (torch.Generator.manual_seed, vLLM's SamplingParams.seed) takes it as a
    non-negative int64.
    """
    digest = hashlib.sha256(f"{seed}\0{key}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def prompt_keys(prompts: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
    """One key per prompt: the caller's keys (checked), or keys derived from the prompt texts.

    Derived keys are a hash of the text plus how many identical prompts came before it in this call, so a
    unique prompt's samples do not depend on the rest of the call, and repeats of one prompt (refinement may
    ask twice for one context) still get different samples. The two kinds carry different prefixes, so a
    caller's key never collides with a derived one.
    """
    if keys is not None:
        keys = list(keys)
        if len(keys) != len(prompts):
            raise ValueError(f"{len(keys)} keys for {len(prompts)} prompts")
        repeated = sorted(k for k, c in Counter(keys).items() if c > 1)
        if repeated:
            raise ValueError(f"prompt keys must be distinct, repeated: {repeated[:3]}")
        return [f"id:{k}" for k in keys]
    seen: Counter[str] = Counter()
    out = []
    for prompt in prompts:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:32]
        out.append(f"text:{digest}:{seen[digest]}")
        seen[digest] += 1
    return out


def row_seeds(prompts: Sequence[str], settings: SamplingSettings, keys: Sequence[str] | None) -> list[int]:
    """The seed of every (prompt, sample) row, prompt-major: row i·n + j is sample j of prompt i."""
    return [
        sample_seed(settings.seed, key, j) for key in prompt_keys(prompts, keys) for j in range(settings.n)
    ]


# -- wake-up probe ---------------------------------------------------------------------------------------
PROBE_SETTINGS = SamplingSettings(n=1, temperature=0.0, max_new_tokens=32)
Probe = dict[str, tuple[int, ...]]  # adapter label ("base" or the adapter path) -> greedy token ids


def check_probe(before: Probe, after: Probe) -> None:
    """Raise `WakeUpProbeMismatch` naming the first route (base model or adapter) whose tokens changed."""
    for label, want in before.items():
        got = after.get(label)
        if got == want:
            continue
        if got is None:
            raise WakeUpProbeMismatch(f"wake-up probe: no output for {label} after wake-up")
        diffs = (i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b)
        at = next(diffs, min(len(want), len(got)))
        raise WakeUpProbeMismatch(
            f"wake-up probe: greedy output of {label} changed after the engine slept (first difference at "
            f"token {at}: {list(want[at : at + 4])} before, {list(got[at : at + 4])} after). The engine's "
            "weights or LoRA state came back wrong (known vLLM sleep-mode bugs); set "
            "`sampling.sleep_mode: false` and lower `sampling.gpu_memory_utilization` so that training fits "
            "beside the awake engine"
        )


class BackendLifecycle:
    """close()/sleep()/wake_up() bookkeeping and the context managers; backends fill in the `_do_*` parts."""

    _closed: bool = False
    _sleeping: bool = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sleeping = False
        self._do_close()

    def sleep(self) -> None:
        if self._closed or self._sleeping:
            return
        self._sleeping = self._do_sleep()

    def wake_up(self) -> None:
        """Undo sleep(); when that fails the backend is closed (its engine stopped) and the error raised."""
        if self._closed or not self._sleeping:
            return
        try:
            self._do_wake_up()
        except BaseException:
            with suppress(Exception):  # the wake-up's error is the one to report
                self.close()
            raise
        self._sleeping = False

    @contextmanager
    def asleep(self) -> Iterator[None]:
        self.sleep()
        try:
            yield
        finally:
            self.wake_up()

    def _begin_generate(self) -> None:
        """Every generate() starts here: refused after close(), wakes a sleeping engine, counts the call."""
        if self._closed:
            raise BackendClosedError(f"{type(self).__name__}: generate() after close()")
        self.wake_up()
        self.calls = getattr(self, "calls", 0) + 1  # read by tests and benchmarks

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- to override ---------------------------------------------------------------------------------
    def _do_close(self) -> None:
        raise NotImplementedError

    def _do_sleep(self) -> bool:
        """Release memory; return whether anything was released (False: sleep is a no-op here)."""
        return False

    def _do_wake_up(self) -> None:
        pass
