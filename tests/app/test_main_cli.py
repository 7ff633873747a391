"""`dtl-studio cli ...`: the engine's command line from the app's own program (the bundle has no Python)."""
from __future__ import annotations

import pytest

from app.main import main


def test_cli_runs_the_engines_command_line_under_the_apps_name(capsys):
    with pytest.raises(SystemExit) as info:
        main(["cli", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dtl-studio cli ") and "train" in out and "export" in out


def test_cli_bad_input_is_a_sentence_and_exit_status_2(tmp_path, capsys):
    assert main(["cli", "export", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "There is no run folder at" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_the_apps_help_names_the_cli(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "dtl-studio cli" in capsys.readouterr().out


def test_hints_name_the_bundles_command_in_the_bundle(monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert main(["cli", "runs"]) == 0
    assert "Start one with: dtl-studio cli train FOLDER" in capsys.readouterr().out
    monkeypatch.delattr(sys, "frozen")
    assert main(["cli", "runs"]) == 0
    assert "Start one with: python -m dtl_engine train FOLDER" in capsys.readouterr().out
