"""What a knob is, for the library: its name in `study.search`, where its value lives in the spec, its kind,
and the value it takes at the default point (trial 0).

The library knows no knob by name: a recipe declares its own (`Spec.knobs` on the recipe's spec model; the
TokenSqueeze knobs are in objectives/tokensqueeze/config.py). Spec validation, `apply_params`, the default
point, the study scope and `tsq sweep check` all read a knob through this record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

# "any": a plain trial function's knob (tsq.config.pipeline.PlainSpec), whose kind only its range says
Kind = Literal["float", "int", "categorical", "any"]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Knob:
    name: str  # the key in `study.search` and in Optuna's trial params
    path: tuple[str, ...]  # where the value lives in the spec
    kind: Kind  # "categorical": searched by choices (or fixed), never by a numeric range
    help: str
    # The default point's value: the paper's, where the paper fixes one; None = the spec's own value.
    paper_value: float | None = None
    to_spec: Callable[[Any], Any] = _same  # a searched value -> the spec field's value
    from_spec: Callable[[Any], Any] = _same  # the spec field's value -> a searched value


def spec_value(spec: Any, knob: Knob) -> Any:
    """The knob's current value in `spec`, in search-space terms (e.g. "on" for refinement.enabled)."""
    value = spec
    for key in knob.path:
        value = value.get(key) if isinstance(value, dict) else getattr(value, key)
    return knob.from_spec(value)


def default_value(spec: Any, knob: Knob) -> Any:
    """The knob's value at the default point: the paper's where it fixes one, else the spec's own."""
    return knob.paper_value if knob.paper_value is not None else spec_value(spec, knob)
