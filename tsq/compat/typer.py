"""The one module that adjusts Typer's help rendering: flags lose the `<bool>` type label.

Typer 0.29's rich help gives every option a type column, flags included, so `--help <bool>` and
`--force <bool>` read as if they took a value. `plain_flags` makes `TyperOption.display_type_rich` return
nothing for a flag. Cosmetic, so it never fails: on a Typer without that method (or with another signature)
help keeps Typer's own rendering.
"""

from __future__ import annotations

import inspect
from typing import Any

from typer.core import TyperOption


def plain_flags() -> bool:
    """Hide the type label of flag options in help; whether Typer offered the hook to do it."""
    original = getattr(TyperOption, "display_type_rich", None)
    if not callable(original) or tuple(inspect.signature(original).parameters) != ("self", "ctx"):
        return False
    if getattr(original, "_tsq_plain_flags", False):
        return True

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    display_type_rich._tsq_plain_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
    return True
