"""The command line, run as a user runs it."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli


def test_help_speaks_to_chemists():
    out = run_cli("--help").stdout
    assert "torsion" in out and "QCFractal" in out
    for group in ("server", "manager", "qc"):
        assert group in out
    assert "--n-workers" in run_cli("manager", "start", "--help").stdout


def test_server_status(embedded_server):
    result = run_cli("server", "status", "--directory", str(embedded_server.directory))
    assert result.returncode == 0
    assert "running" in result.stdout and embedded_server.address in result.stdout


def test_drive_prints_profile_and_reuses_cache(embedded_server, managers):
    args = [
        "qc",
        "drive",
        "--smiles",
        "CCO",
        "--bond",
        "0,1",
        "--preset",
        "debug",
        "--grid-spacing",
        "60",
        "--directory",
        str(embedded_server.directory),
    ]
    first = run_cli(*args, "--json", timeout=900)
    assert first.returncode == 0, first.stderr
    profile = json.loads(first.stdout)[0]
    assert profile["status"] == "complete"
    assert len(profile["grid"]) == 6
    second = run_cli(*args, timeout=900)
    assert second.returncode == 0, second.stderr
    assert f"record {profile['record_id']}" in second.stdout
    assert "kcal/mol" in second.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--smiles", "C1CC(", "--bond", "0,1"], "cannot read SMILES"),
        (["--smiles", "C1CCCCC1", "--bond", "0,1"], "ring"),
        (["--smiles", "CCO", "--bond", "0,7"], "not bonded"),
        (["--smiles", "CCO", "--bond", "0,1", "--preset", "nope"], "unknown QC preset"),
        (["--smiles", "CCO", "--bond", "0,1", "--grid-spacing", "120"], "must divide 180"),
        (["--smiles", "CCO", "--dihedral", "0,1,x,3"], "comma-separated"),
        (["--smiles", "CCO"], "--dihedral or --bond"),
    ],
)
def test_bad_input_gives_one_error_line(embedded_server, args, message):
    result = run_cli("qc", "drive", *args, "--directory", str(embedded_server.directory))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(message in line for line in lines), result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in lines if line.startswith("Error")]
    assert len(error_lines) == 1


def test_unreachable_external_server(tmp_path):
    creds = tmp_path / "server.yaml"
    creds.write_text("address: http://127.0.0.1:9\nusername: me\npassword: not-on-the-command-line\n")
    creds.chmod(0o600)
    result = run_cli("qc", "drive", "--smiles", "CCO", "--bond", "0,1", "--server-file", str(creds))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot reach a QCFractal server")
    assert "not-on-the-command-line" not in result.stderr + result.stdout


def test_workflow_save_change_and_reload(tmp_path):
    saved = tmp_path / "mine.yaml"
    result = run_cli("workflow", "save", str(saved), "--workflow", "xtb", "--set", "qc_spec.grid_spacing=30")
    assert result.returncode == 0, result.stderr
    shown = run_cli("workflow", "show", "--workflow-file", str(saved), "--set", "optimizer.max_iterations=3")
    assert shown.returncode == 0, shown.stderr
    assert "grid_spacing: 30" in shown.stdout and "max_iterations: 3" in shown.stdout
    assert "program: xtb" in shown.stdout
    presets = run_cli("workflow", "presets").stdout
    assert all(name in presets for name in ("default", "xtb", "debug"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "qc_spec.grid_spacing=7"], "must divide 180"),
        (["--set", "nonsense=1"], "nonsense: Extra inputs are not permitted"),
        (["--set", "justtext"], "is not FIELD=VALUE"),
        (["--workflow", "fastest"], "unknown workflow preset"),
    ],
)
def test_bad_workflow_changes_give_one_error_line(args, message):
    result = run_cli("workflow", "show", *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_fragment_reports_each_molecule_and_each_bad_one(tmp_path, am1_cache_directory):
    result = run_cli(
        "fragment",
        "--smiles", "CCCC",
        "--smiles", "C1CC(",
        "--smiles", "CCO",
        "--workflow", "debug",
        "--cache-directory", str(am1_cache_directory),
        "--json",
    )  # fmt: skip
    assert result.returncode == 1
    outcomes = json.loads(result.stdout)
    assert [o["schema"] is not None for o in outcomes] == [True, False, False]
    assert outcomes[0]["schema"]["fragmentation"]["targets"][0]["parent_bonds"] == [[1, 2]]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert "cannot read SMILES" in errors[0] and "nothing to fit" in errors[1]
