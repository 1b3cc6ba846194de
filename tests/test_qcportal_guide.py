"""docs/qcportal.md run as a notebook against the session's server, with a real read account.

Every ```python block of the guide is executed in order in one namespace, as a user pasting them
into a notebook would, so the guide fails this test as soon as its code stops working with the
qcportal (or bespoke-fractal) this project installs.

Convention for the values a user adapts: the guide's block whose first line starts with
``# settings:`` assigns them (molecule, bond, level of theory, grid). The test runs that block
like any other and then replaces the names in ``OVERRIDES`` with a drive this session computes
in seconds (butane's central bond, RDKit MMFF94, 60° grid) before running the rest. Each name in
``OVERRIDES`` must be assigned by that block, so a renamed setting fails here instead of quietly
testing the guide's own default. Credentials are not overridden: the test runs the guide's own
``bespoke-fractal server user add ... --role read --output ~/.qca/...`` command (server directory
and user name replaced) under a temporary ``HOME``, and also sets the ``QCPORTAL_*`` variables,
which is where the guide tells a user to put them.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import invoke
from openff.toolkit import Molecule

from bespoke_fractal.qc import canonicalize_torsion, default_dihedral, get_preset
from bespoke_fractal.schema.drives import grid_angles

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "qcportal.md"
SPEC = get_preset("debug", grid_spacing=60)
SMILES, BOND = "CCCC", (1, 2)
OVERRIDES = {
    "smiles": SMILES,
    "bond": BOND,
    "level": f"{SPEC.program}/{SPEC.method}/{SPEC.basis or 'none'}",
    "grid_spacing": SPEC.grid_spacing,
    "preset": "debug",
}
SETTINGS_MARK = "# settings:"
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced block of ``language`` in the guide, in order."""
    text = GUIDE.read_text()
    return [
        (text.count("\n", 0, match.start(2)) + 1, match.group(2))
        for match in FENCE.finditer(text)
        if match.group(1) == language
    ]


def _user_add_arguments(directory: Path, username: str) -> list[str]:
    """The guide's ``server user add`` command, for this server and a fresh user name."""
    commands = [" ".join(code.replace("\\\n", " ").splitlines()) for _line, code in _blocks("bash")]
    [command] = [c for c in commands if "bespoke-fractal server user add" in c]
    words = shlex.split(command[command.index("bespoke-fractal") :])[1:]
    assert words[:3] == ["server", "user", "add"] and "--role" in words, words
    assert words[words.index("--role") + 1] == "read"
    words[3] = username
    words[words.index("--directory") + 1] = str(directory)
    return [os.path.expanduser(w) if w.startswith("~") else w for w in words]


@pytest.fixture(scope="module")
def butane_drive(stage):
    """A completed drive of a known torsion, read with the project's own stage (submit account)."""
    molecule = Molecule.from_smiles(SMILES)
    dihedral = default_dihedral(molecule, BOND)
    [result] = stage.run(molecule, [dihedral], SPEC, timeout=900, progress=False)
    assert result.ok, result.error
    return canonicalize_torsion(molecule, dihedral), result


def test_guide_runs_as_a_notebook_with_a_read_account(
    butane_drive, embedded_server, admin_client, tmp_path, monkeypatch
):
    torsion, expected = butane_drive
    import matplotlib.pyplot  # noqa: F401 - loaded with the real HOME's font cache, not a new one

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)

    # the account, made by the guide's own command; its credentials file where the guide says
    username = f"guide-reader-{secrets.token_hex(3)}"
    arguments = _user_add_arguments(embedded_server.directory, username)
    added = invoke(*arguments)
    assert added.exit_code == 0, added.output
    credentials = Path(arguments[arguments.index("--output") + 1])
    assert credentials.is_relative_to(home)
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert {u.username: u.role for u in admin_client.list_users()}[username] == "read"
    stored = yaml.safe_load(credentials.read_text())
    assert stored["username"] == username
    for name in ("QCPORTAL_VERIFY", "QCPORTAL_API_TOKEN", "QCPORTAL_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QCPORTAL_ADDRESS", stored["address"])
    monkeypatch.setenv("QCPORTAL_USERNAME", stored["username"])
    monkeypatch.setenv("QCPORTAL_PASSWORD", stored["password"])

    # every python block, in order, in one namespace; tracebacks point at the guide's lines
    blocks = _blocks("python")
    assert sum(code.startswith(SETTINGS_MARK) for _line, code in blocks) == 1
    namespace: dict = {"__name__": "qcportal_guide"}
    clients = []
    for first_line, code in blocks:
        exec(compile("\n" * (first_line - 1) + code, str(GUIDE), "exec"), namespace)
        if code.startswith(SETTINGS_MARK):
            assert os.path.expanduser(namespace["credentials_file"]) == str(credentials)
            unassigned = [name for name in OVERRIDES if name not in namespace]
            assert not unassigned, f"the settings block no longer sets {unassigned}"
            namespace.update(OVERRIDES)
        client = namespace.get("client")
        if client is not None and (not clients or client is not clients[-1]):
            clients.append(client)

    # connected twice (credentials file, then QCPORTAL_* environment), both as the read account
    assert len(clients) == 2 and all(c.username == username for c in clients)

    # the dataset, and the drive found both by SMILES and by identity key
    assert expected.dataset_name in namespace["dataset_names"]
    by_smiles = {record.id: entry for _name, entry, record in namespace["drives"]}
    assert expected.record_id in by_smiles
    assert by_smiles[expected.record_id].name == expected.identity_key
    assert namespace["key"] == expected.identity_key
    assert namespace["record"].id == expected.record_id

    # energies per grid angle: what the project's stage reads for the same record
    angles = namespace["angles"]
    assert angles == grid_angles(SPEC.grid_spacing) == [p.angle for p in expected.grid]
    assert len(angles) == 360 // SPEC.grid_spacing
    hartree = [p.energy_hartree for p in expected.grid]
    assert namespace["energies_hartree"] == pytest.approx(hartree, rel=1e-12)
    profile = namespace["profile_kcal"]
    assert profile == pytest.approx([p.relative_energy_kcal_mol for p in expected.grid], abs=1e-9)
    assert min(profile) == 0.0 and profile[angles.index(180)] == 0.0  # butane: anti is lowest
    assert 4.0 < profile[angles.index(0)] < 7.0  # MMFF94 syn barrier, no unit slip

    # geometries (canonical order, Å) are the stage's (input order) reordered; dihedral on grid
    for point in expected.grid:
        canonical = np.asarray(point.geometry_angstrom)[torsion.canonical_to_input]
        assert namespace["geometries"][point.angle] == pytest.approx(canonical, abs=1e-9)
        off = (namespace["measured"][point.angle] - point.angle + 180) % 360 - 180
        assert abs(off) < 1.0
    assert namespace["n_optimizations"] >= len(angles)

    # the plot
    plot = work / "torsion-profile.png"
    assert Path(namespace["plot_path"]).resolve() == plot.resolve()
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000

    # the project's helpers, with the read account, give the same profile in input atom order
    result = namespace["result"]
    assert result.ok and result.record_id == expected.record_id
    assert [p.energy_hartree for p in result.grid] == hartree
    assert [p.geometry_angstrom for p in result.grid] == [p.geometry_angstrom for p in expected.grid]
