"""The one module that touches TRL's private API: `FencedDPOTrainer`, checked against the TRL it was made for.

tsq's trainer (`tsq.engines.train`) needs three things TRL offers no public hook for:

- `DPOTrainer._prepare_dataset`: tsq tokenises the pairs itself (EOS only after responses that generated
  one, truncation counted rather than silent);
- `DPOTrainer._precompute_ref_logps`: reference log-probs come from tsq's own per-sequence store;
- `trl.trainer.dpo_trainer.hash_module`: with `precompute_ref_log_probs`, `DPOTrainer.__init__` copies every
  weight to CPU as fp32 and SHA-256s it, only to name TRL's own reference cache file. When tsq's store
  serves the reference log-probs that hash is never read, so it is skipped (about 0.33 s per 64M
  parameters on CPU: ~40 s for a 7B model, per trainer built).

`FencedDPOTrainer` routes the two private methods to `prepare_dataset` and `reference_logps`, whose defaults
are TRL's own, so a subclass overrides names tsq owns. Building one first runs `check_trl`: a TRL outside
`SUPPORTED`, or one whose private hooks are gone or changed signature, fails with one line
(`TrlVersionError`, a `UserError`) instead of an override TRL silently never calls.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import trl
import trl.trainer.dpo_trainer as dpo_trainer_module
from trl import DPOTrainer

from tsq.compat import require_version
from tsq.errors import UserError

# The TRL releases whose private API below was read and tested (pyproject.toml pins the same range)
SUPPORTED = ">=1.16,<1.17"
# DPOTrainer's private methods tsq overrides, with the parameters it calls them with
PRIVATE_HOOKS: dict[str, tuple[str, ...]] = {
    "_prepare_dataset": ("self", "dataset", "processing_class", "args", "dataset_name"),
    "_precompute_ref_logps": ("self", "dataset", "name", "batch_size"),
}
# Module-level functions of trl.trainer.dpo_trainer the adapter replaces for a while
PRIVATE_FUNCTIONS = ("hash_module",)
# What `_precompute_model_hash` holds when the hash was skipped (TRL only reads it in its own reference pass)
SKIPPED_HASH = "tsq:model-hash-skipped"

_patch_lock = threading.Lock()
_hash_module = getattr(dpo_trainer_module, "hash_module", None)


class TrlVersionError(UserError):
    """The installed TRL is not one the adapter was written for."""


def check_trl(
    version: str | None = None,
    trainer_cls: type = DPOTrainer,
    hooks: Mapping[str, tuple[str, ...]] = PRIVATE_HOOKS,
    module: Any = dpo_trainer_module,
    functions: tuple[str, ...] = PRIVATE_FUNCTIONS,
) -> None:
    """Raise TrlVersionError (one line) unless TRL `version` (default: installed) is in SUPPORTED and
    `trainer_cls` still has every private hook with the parameters tsq calls it with."""
    version = trl.__version__ if version is None else version
    hint = require_version("trl", version, SUPPORTED, TrlVersionError)
    for name, params in hooks.items():
        method = getattr(trainer_cls, name, None)
        if not callable(method):
            raise TrlVersionError(f"trl {version}: {trainer_cls.__name__}.{name} is missing; {hint}")
        found = tuple(inspect.signature(method).parameters)
        if found != params:
            raise TrlVersionError(
                f"trl {version}: {trainer_cls.__name__}.{name}{found} is not {name}{params}; {hint}"
            )
    for name in functions:
        if not callable(getattr(module, name, None)):
            raise TrlVersionError(f"trl {version}: {module.__name__}.{name} is missing; {hint}")


def model_hash(model: Any) -> str:
    """TRL's own hash of a module's weights (what `DPOTrainer.__init__` stores when not skipped)."""
    # the function itself, not the module attribute: that is the stub while a trainer is being built
    return _hash_module(model)


@contextmanager
def _model_hash_skipped(skip: bool) -> Iterator[None]:
    """While active, TRL's `hash_module` returns SKIPPED_HASH at once (when `skip`)."""
    if not skip:
        yield
        return
    # One trainer at a time patches the module attribute: another thread's trainer must not see the stub
    with _patch_lock:
        original = dpo_trainer_module.hash_module
        dpo_trainer_module.hash_module = lambda module: SKIPPED_HASH
        try:
            yield
        finally:
            dpo_trainer_module.hash_module = original


class FencedDPOTrainer(DPOTrainer):
    """DPOTrainer whose private hooks are routed to `prepare_dataset` and `reference_logps`.

    `skip_model_hash=True` skips TRL's model hash in `__init__`; pass it only when `reference_logps` does not
    fall back to TRL's own reference pass (if it does, the hash is computed then, so TRL's cache stays right).
    """

    def __init__(self, *args: Any, skip_model_hash: bool = False, **kwargs: Any) -> None:
        check_trl()
        with _model_hash_skipped(skip_model_hash):
            super().__init__(*args, **kwargs)

    # --- TRL's private hooks: the only place they are named ---

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return self.prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        return self.reference_logps(dataset, name, batch_size)

    # --- what subclasses override; the defaults are TRL's own behaviour ---

    def prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """Tokenise a text dataset into prompt_ids / chosen_ids / rejected_ids (default: TRL's way)."""
        return DPOTrainer._prepare_dataset(self, dataset, processing_class, args, dataset_name)

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """Add ref_chosen_logps / ref_rejected_logps columns (default: TRL's pass and cache file)."""
        if getattr(self, "_precompute_model_hash", None) == SKIPPED_HASH:
            # TRL names its cache file by the hash: compute the real one before TRL reads it
            self._precompute_model_hash = model_hash(self.ref_model or self.model)
        return DPOTrainer._precompute_ref_logps(self, dataset, name, batch_size)
