"""Turning a row of generated token ids into a `Completion`, the same way for every backend.

Both backends hand their raw generated ids to `finish_completion`, which decodes with the model's own
tokenizer, so HF and vLLM produce identical text and lengths for identical ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import GenerationConfig, PreTrainedTokenizerBase

from tsq.engines.generation.base import Completion


def eos_token_ids(model_path: Path, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """Every token id that ends a response: the generation config's eos ids plus the tokenizer's."""
    ids: set[int] = set()
    try:
        configured = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's eos is the only one
        configured = None
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return tuple(sorted(ids))


def finish_completion(
    tokenizer: PreTrainedTokenizerBase,
    generated: Sequence[int],
    eos_ids: Iterable[int],
    stop: Sequence[str] = (),
) -> Completion:
    """The completion a row of generated ids stands for.

    A row ends at whichever comes first: the token that completes a stop string (text trimmed right after
    the stop string; ids kept through that token), or an eos token (kept; nothing after it — that is
    padding). A row with neither ran into max_new_tokens: finish_reason "length".
    """
    ids = list(generated)
    eos = set(eos_ids)
    end = next((i for i, tok in enumerate(ids) if tok in eos), None)
    body = ids if end is None else ids[:end]
    if stop:
        k = _stop_completing_length(tokenizer, body, stop)
        if k is not None:
            text = _decode(tokenizer, body[:k])
            return Completion(_trim_after_stop(text, stop), tuple(body[:k]), "stop")
    if end is not None:
        return Completion(_decode(tokenizer, body), tuple(ids[: end + 1]), "stop")
    return Completion(_decode(tokenizer, ids), tuple(ids), "length")


def _decode(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _trim_after_stop(text: str, stop: Sequence[str]) -> str:
    ends = [text.find(s) + len(s) for s in stop if s in text]
    return text[: min(ends)]


def _stop_completing_length(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], stop: Sequence[str]
) -> int | None:
    """Smallest k such that decode(ids[:k]) contains a stop string (None if none does).

    Containment only grows with k, so a binary search needs O(log n) decodes instead of one per token.
    """

    def hit(k: int) -> bool:
        text = _decode(tokenizer, ids[:k])
        return any(s in text for s in stop)

    if not ids or not hit(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
