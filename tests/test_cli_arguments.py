"""The CLI refuses an out-of-range option before any work, naming the option and its bound."""

from __future__ import annotations

import pytest

from cli.arguments import names
from cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--days", "0"], "argument --days: 0 is out of range: must be at least 1"),
        (["run", "--days", "three"], "argument --days: 'three' is not a whole number"),
        (
            ["run", "--rows-per-day", "0"],
            "argument --rows-per-day: 0 is out of range: must be between 1 and 5000000",
        ),
        (
            ["run", "--rows-per-day", "1000000000"],
            "argument --rows-per-day: 1000000000 is out of range: must be between 1 and 5000000",
        ),
        (["run", "--start", "2026-02-30"], "argument --start: '2026-02-30' is not a day (YYYY-MM-DD)"),
        (
            ["run", "--malformed-rate", "0.5"],
            "argument --malformed-rate: 0.5 is out of range: must be finite, at least 0 and below 0.5",
        ),
        (
            ["run", "--malformed-rate", "nan"],
            "argument --malformed-rate: nan is out of range: must be finite",
        ),
        (["run", "--trials", "0"], "argument --trials: 0 is out of range: must be at least 1"),
        (["run", "--parallel", "0"], "argument --parallel: 0 is out of range: must be at least 1"),
        (["run", "--tuning-seconds", "inf"], "argument --tuning-seconds: inf is out of range"),
        (["run", "--score-days", "-1"], "argument --score-days: -1 is out of range"),
        (["serve", "--port", "70000"], "argument --port: 70000 is out of range: must be between 0 and 65535"),
        (
            ["serve", "--poll-seconds", "0"],
            "argument --poll-seconds: 0 is out of range: must be finite, above 0",
        ),
        (["health-loop", "--interval", "-1"], "argument --interval: -1 is out of range"),
        (
            ["rollback", "--region", "eu-west", "--to-version", "0"],
            "argument --to-version: 0 is out of range",
        ),
    ],
)
def test_an_out_of_range_option_is_a_usage_error_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_region_lists_are_stripped_and_repeats_dropped():
    assert names("eu-west, us-east ,eu-west,") == ["eu-west", "us-east"]
    assert names("") == names(" , ") == []  # the default (every active region), as before


def test_an_unknown_region_in_a_list_is_named_before_any_work(tmp_path, capsys):
    assert main(["run", "--regions", "eu-west, mars", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "unknown or standby region(s) 'mars'" in err and "eu-west'" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # Before: a run that failed on Dagster's "Invariant failed" for the partition range.
        (
            ["--start", "1900-01-01"],
            "--start 1900-01-01 is before the first day of the partitions, 2026-01-01",
        ),
        # Before: an OverflowError traceback.
        (["--start", "9999-12-31", "--days", "2"], "runs past the calendar's last day, 9999-12-31"),
    ],
)
def test_a_window_outside_the_partitions_is_refused_before_any_work(argv, message, tmp_path, capsys):
    home = tmp_path / "home"
    assert main(["run", *argv, "--home", str(home)]) == 2
    assert message in capsys.readouterr().err
    assert not home.exists()  # nothing was set up for it


def test_serve_names_an_unknown_or_standby_region_before_starting(tmp_path, capsys):
    """Before: a ValueError traceback from the app factory, after the start-up warnings."""
    assert main(["serve", "--regions", "eu-west,us-west", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err
    assert "unknown or standby region(s) 'us-west'" in err and "Traceback" not in err


def test_a_setting_or_topology_with_no_meaning_is_a_usage_error_not_a_traceback(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MERIDIAN_PROFILE", "staging")
    assert main(["run", "--home", str(tmp_path / "home")]) == 2
    assert "meridian run: MERIDIAN_PROFILE='staging' is not a known profile" in capsys.readouterr().err
    monkeypatch.delenv("MERIDIAN_PROFILE")
    assert main(["run", "--home", str(tmp_path / "run #1")]) == 2
    assert "(MERIDIAN_HOME) holds '#'" in capsys.readouterr().err
    topology = tmp_path / "regions.yaml"
    topology.write_text("regions: []\n")
    monkeypatch.setenv("MERIDIAN_TOPOLOGY", str(topology))
    assert main(["run", "--home", str(tmp_path / "home")]) == 2
    assert f"meridian run: {topology}: invalid topology" in capsys.readouterr().err
