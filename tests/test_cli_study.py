"""Commands that read a study find it as their help says: --study, else the spec's name, else the only one."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tsq.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_studies(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for name in ("quickstart", "other"):
        optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
    return url


@pytest.mark.parametrize("command", [["sweep", "status"], ["sweep", "best"]])
def test_the_spec_names_the_study_among_several(command: list[str], two_studies: str) -> None:
    runner = CliRunner()
    bare = runner.invoke(app, [*command, "--storage", two_studies])
    assert bare.exit_code != 0
    assert "holds 2 studies (other, quickstart); name one with --study NAME, or give the spec" in str(
        bare.exception
    )
    given = runner.invoke(app, [*command, str(ROOT / "sweeps" / "quickstart.yaml"), "--storage", two_studies])
    assert given.exit_code == 0, given.output
    assert "quickstart" in given.output and "other" not in given.output
    named = runner.invoke(app, [*command, "--study", "other", "--storage", two_studies])
    assert named.exit_code == 0, named.output
    assert "other" in named.output


def test_report_pareto_takes_the_spec(two_studies: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["report", "pareto", str(ROOT / "sweeps" / "quickstart.yaml"), "--storage", two_studies,
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    # found by the spec's name; it has no trials yet, which the report says
    assert str(result.exception) == "study quickstart: no completed trial yet, nothing to report"
