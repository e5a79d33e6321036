"""The generation interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol


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


class Backend(Protocol):
    """Generates completions for already-formatted prompt strings, optionally through a LoRA adapter."""

    name: str
    tokenizer: Any  # the model's tokenizer, as the backend loaded it

    def generate(
        self, prompts: list[str], settings: SamplingSettings, adapter: Path | None = None
    ) -> list[list[Completion]]:
        """One list of `settings.n` completions per prompt, in prompt order."""
        ...
