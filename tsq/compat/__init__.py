"""Adapters around third-party private APIs: each one checks the installed version it was written for.

`tsq.compat.trl`: TRL's `DPOTrainer` hooks (dataset preparation, the reference pass, the model hash).
`tsq.compat.optuna`: the first heartbeat at RUNNING (RDBStorage), Optuna's WFG hypervolume.
`tsq.compat.typer`: help without a `<bool>` label on flags (cosmetic; never fails).
"""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from tsq.errors import UserError


def require_version(package: str, version: str, supported: str, error: type[UserError]) -> str:
    """Raise `error` (one line) unless `version` of `package` is in the `supported` range; returns the hint
    the adapter's other checks end their lines with."""
    wanted = f"{package}{supported}"
    hint = f"tsq/compat/{package}.py supports {wanted}; install one: pip install '{wanted}'"
    try:
        ok = SpecifierSet(supported).contains(Version(version), prereleases=True)
    except InvalidVersion:
        ok = False
    if not ok:
        raise error(f"{package} {version} is installed, but {hint}")
    return hint
