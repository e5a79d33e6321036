"""The Optuna adapter (tsq/compat/optuna.py) refuses an Optuna it was not written for, in one line."""

from __future__ import annotations

import numpy as np
import pytest

from tsq.compat.optuna import OptunaVersionError, check_optuna, compute_hypervolume
from tsq.errors import UserError


def test_the_installed_optuna_passes() -> None:
    check_optuna()


@pytest.mark.parametrize("version", ["4.2.0", "5.1.0", "not-a-version"])
def test_an_unsupported_version_is_one_line(version: str) -> None:
    with pytest.raises(OptunaVersionError, match=r"supports optuna>=5\.0,<5\.1") as err:
        check_optuna(version)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_a_missing_private_name_is_one_line() -> None:
    with pytest.raises(OptunaVersionError, match=r"optuna\._hypervolume\.gone is missing"):
        check_optuna(names=[("optuna._hypervolume", "gone")])


def test_hypervolume_through_the_adapter() -> None:
    # two boxes 1x2 and 2x1 from the reference (3, 3) overlapping in 1x1: 2 + 2 - 1
    assert compute_hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([3.0, 3.0])) == pytest.approx(3.0)
