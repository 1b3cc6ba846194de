"""The bad-input catalogue: each kind gets one clear line, and a good job next to it completes.

Every case runs the ``bespoke-fractal`` command a user would, against an executor running on
the session's server. The good job is pentane under the debug workflow; after the first case
its fragments, drive and fit are cached, so it completes in seconds.
"""

from __future__ import annotations

import os
import time

import pytest
from helpers import WIDE, run_cli

from bespoke_fractal.executor import BespokeExecutor, JobStore

GOOD = "CCCCC"
DEBUG = ["--workflow", "debug", "--set", "qc_spec.grid_spacing=60"]


@pytest.fixture(scope="module")
def running(embedded_server, managers):
    """An executor on the session's server; commands submit to its directory."""
    with BespokeExecutor(
        n_qc_compute_workers=0, directory=embedded_server.directory, poll_interval=0.5
    ) as ex:
        yield ex


@pytest.fixture(scope="module")
def files(tmp_path_factory, embedded_server):
    root = tmp_path_factory.mktemp("bad-input")
    (root / "empty.sdf").write_text("")
    (root / "garbage.sdf").write_bytes(b"\x00\x01 not a molecule \xff\n$$$$\n")
    (root / "molecule.pdb").write_text("ATOM      1  C   UNK     1       0.000   0.000   0.000\nEND\n")
    (root / "bad.mol2").write_text("@<TRIPOS>MOLECULE\nbroken\n")
    (root / "not-yaml.yaml").write_text("qc_spec: [\n")
    (root / "unknown-field.yaml").write_text("nonsense_field: 3\n")
    (root / "grid-72.yaml").write_text("qc_spec: {preset: debug, grid_spacing: 72}\n")
    (root / "no-preset.yaml").write_text("qc_spec: no-such-preset\n")
    (root / "constrained.yaml").write_text("initial_force_field: openff-2.2.1.offxml\n")
    (root / "bad-smarts.yaml").write_text("target_torsion_smirks: ['[C:1]-[C']\n")
    (root / "fragmenter.yaml").write_text("fragmentation_engine: {type: magic}\n")
    address = embedded_server.address
    (root / "missing-address.yaml").write_text("username: someone\n")
    (root / "wrong-password.yaml").write_text(
        f"address: {address}\nusername: bespoke-submit\npassword: wrong\n"
    )
    (root / "readable.yaml").write_text(f"address: {address}\nusername: bespoke-submit\npassword: x\n")
    for name in ("missing-address.yaml", "wrong-password.yaml"):
        os.chmod(root / name, 0o600)
    os.chmod(root / "readable.yaml", 0o644)
    return root


def F(name: str) -> str:  # noqa: N802 - a placeholder for a file of the `files` fixture
    return "{files}/" + name


# (command arguments, text the one error line must hold); {good} is the good molecule
CASES = [
    # SMILES
    (["submit", "--smiles", "C1CC("], "cannot read SMILES 'C1CC('"),
    (["submit", "--smiles", "[CH2]C"], "radical"),
    (["submit", "--smiles", "CC(F)(Cl)CC"], "undefined stereochemistry"),
    (["submit", "--smiles", "C[Xx]C"], "cannot read SMILES"),
    (["submit", "--smiles", ""], "empty SMILES"),
    # molecules that read but cannot be fitted: the job fails in its fragmentation stage
    (["job", "CC"], "nothing to fit"),
    (["job", "CCB(C)CC"], "cannot handle element B"),
    (["job", "C[Si](C)(C)CC"], "no vdW parameter"),
    # files
    (["submit", "--file", F("empty.sdf")], "no molecule records"),
    (["submit", "--file", F("garbage.sdf")], "garbage.sdf"),
    (["submit", "--file", F("molecule.pdb")], "not a molecule file"),
    (["submit", "--file", F("bad.mol2")], "bad.mol2"),
    (["submit", "--file", F("no-such.sdf")], "does not exist"),
    # workflow files and options
    (["submit", "--workflow", F("not-yaml.yaml")], "not valid yaml"),
    (["submit", "--workflow", F("unknown-field.yaml")], "nonsense_field: Extra inputs are not permitted"),
    (["submit", "--workflow", F("grid-72.yaml")], "must divide 180"),
    (["submit", "--workflow", F("no-preset.yaml")], "unknown QC preset 'no-such-preset'"),
    (["submit", "--workflow", F("constrained.yaml")], "constrains bonds to hydrogen"),
    (["submit", "--workflow", F("bad-smarts.yaml")], "does not parse"),
    (["submit", "--workflow", F("fragmenter.yaml")], "fragmentation_engine"),
    (["submit", "--workflow", "no-such-workflow"], "unknown workflow preset 'no-such-workflow'"),
    (["submit", "--set", "qc_spec.grid_spacing"], "is not FIELD=VALUE"),
    (["submit", "--set", "qc_spec.nonsense=1"], "nonsense"),
    (["submit", "--target-torsion", "[C:1]-[C:3]"], "exactly the two bond atoms"),
    (["launch", "--qc-compute-n-cores", "0"], "n_cores must be a whole number of at least 1"),
    (["launch", "--qc-compute-max-mem", "-2"], "max_memory must be a positive number"),
    (["watch", "--id", "99999"], "no job 99999"),
    (["retrieve", "--id", "one", "--output", "{files}/out"], "job ids are numbers"),
    # servers, credentials, the job store
    (["launch", "--fractal-address", "http://127.0.0.1:9"], "cannot reach a QCFractal server"),
    (["launch", "--fractal-credentials", F("missing-address.yaml")], "is malformed (address)"),
    (["launch", "--fractal-credentials", F("wrong-password.yaml")], "rejected the credentials"),
    (["launch", "--fractal-credentials", F("readable.yaml")], "readable by others: chmod 600"),
    (["launch", "--fractal-credentials", F("absent.yaml")], "does not exist"),
    (["launch", "--database-url", "postgresql://me:secret@127.0.0.1/jobs"], "BESPOKE_FRACTAL_DATABASE_URL"),
    (["launch"], "another executor is running"),
]


def wait_done(store: JobStore, job_id: str, timeout: float = 600):
    deadline = time.monotonic() + timeout
    while (output := store.output(job_id)).status not in ("success", "errored"):
        assert time.monotonic() < deadline, output
        time.sleep(0.5)
    return output


def test_catalogue_has_at_least_25_kinds():
    assert len(CASES) >= 25


@pytest.mark.parametrize("args, message", CASES, ids=[f"{i:02d}-{c[0][0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_and_the_good_job_completes(running, files, args, message):
    directory = str(running.directory)
    args = [a.replace("{files}", str(files)) for a in args]
    store = JobStore.in_directory(directory)
    if args[0] == "job":  # readable, but fails in its job; submitted with the good molecule
        result = run_cli(
            "executor", "submit", "--directory", directory, "--smiles", GOOD, "--smiles", args[1], *DEBUG,
            env=WIDE,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        good_id, bad_id = (line.split()[1].rstrip(":") for line in result.stdout.splitlines()[:2])
        bad = wait_done(store, bad_id)
        assert bad.status == "errored" and message in bad.error and "\n" not in bad.error
        assert bad.error.startswith(f"job {bad_id} ({args[1]}), fragmentation: ")
    else:
        # a launch must get past the directory lock of the running executor to meet its bad input
        where = directory if args[0] != "launch" or args == ["launch"] else str(files / "launch")
        command = ["executor", args[0], "--directory", where, *args[1:]]
        if args[0] == "submit":
            if not {"--workflow", "--set", "--target-torsion"} & set(args):
                command += DEBUG
            command += ["--smiles", GOOD]  # queued beside the bad input when the options are valid
        result = run_cli(*command, env=WIDE)
        assert result.returncode != 0, result.stdout
        lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr and "secret" not in result.stderr + result.stdout
        # a submission with valid options queues the good molecule beside the bad one
        queued = [
            line.split()[1].rstrip(":") for line in result.stdout.splitlines() if line.startswith("job ")
        ]
        if not queued:
            submitted = run_cli(
                "executor", "submit", "--directory", directory, "--smiles", GOOD, *DEBUG, env=WIDE
            )
            assert submitted.returncode == 0, submitted.stderr
            queued = [submitted.stdout.split()[1].rstrip(":")]
        good_id = queued[0]
    good = wait_done(store, good_id)
    assert good.status == "success", good.error
