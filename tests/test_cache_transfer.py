"""Cache import/export between two real QCFractal servers: drives computed on A (the session's
server, with managers) are replayed into B (no managers), and a fit against B computes nothing."""

from __future__ import annotations

import os

import pytest
import yaml
from helpers import invoke
from openff.toolkit import ForceField

from bespoke_fractal.cache import SourceSelection, import_drives, read_archive, read_server_drives
from bespoke_fractal.executor.drives import run_targets
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.optimization.stage import optimize_schema, profiles_from_results
from bespoke_fractal.qc import TorsionDriveStage, get_preset
from bespoke_fractal.server import EmbeddedServer, ServerSettings
from bespoke_fractal.workflow import BespokeWorkflowFactory

SPEC = get_preset("debug", grid_spacing=90)
FACTORY = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 90})
# molecules no other test drives on the session server (test_crash_recovery counts new CCOC drives)
BUTANE, ETHER = "CCCC", "CC(C)OC"


@pytest.fixture(scope="module")
def server_b(traversable_directory):
    server = EmbeddedServer(
        traversable_directory("bf-cacheB-") / "executor", ServerSettings(heartbeat_frequency=2)
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def computed(stage, am1_cache_directory):
    """Job descriptions and drive results of butane and isopropyl methyl ether, computed on A."""
    cache = AM1BondOrderCache(am1_cache_directory)
    schemas = {smiles: FACTORY.optimization_schema_from_molecule(smiles, cache) for smiles in (BUTANE, ETHER)}
    assert all(s.qc_spec.dataset_name == SPEC.dataset_name for s in schemas.values())
    results = run_targets(stage, list(schemas.values()), timeout=600, progress=False)
    assert all(r.ok for r in results.values()), [r.error for r in results.values()]
    return schemas, results


def _record_id(computed, smiles: str) -> int:
    schemas, results = computed
    [key] = {t.identity.key for t in schemas[smiles].targets}
    return results[(SPEC.dataset_name, key)].record_id


def _counts(client) -> tuple[int, int]:
    """All records, and those waiting or running (each of these has a task)."""
    return sum(1 for _ in client.query_records()), sum(
        1 for _ in client.query_records(status=["waiting", "running"])
    )


def _credentials(path, connection) -> str:
    path.write_text(
        yaml.safe_dump(
            {
                "address": connection.address,
                "username": connection.username,
                "password": connection.password.get_secret_value(),
            }
        )
    )
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def exported(computed, embedded_server, server_b, tmp_path_factory):
    """The ether's drive exported from A with the CLI, imported into B from the file."""
    directory = tmp_path_factory.mktemp("cache")
    credentials = _credentials(directory / "a.yaml", embedded_server.connection("read"))
    path = directory / "drives.json.gz"
    record_id = _record_id(computed, ETHER)
    export = invoke("cache", "export", "--file", str(path), "--record-ids", str(record_id),
                  "--fractal-credentials", credentials)  # fmt: skip
    assert export.exit_code == 0, export.output
    imported = invoke("cache", "import", "--file", str(path), "--directory", str(server_b.directory))
    return path, export, imported


def test_export_and_import_a_file_with_the_cli(exported, server_b, computed, embedded_server):
    path, export, imported = exported
    assert "wrote 1 drive(s)" in export.stdout
    assert imported.exit_code == 0, imported.output
    assert "1 imported, 0 already present, 0 refused, 0 failed" in imported.stdout
    [drive] = read_archive(path).drives
    assert drive.source_record_id == _record_id(computed, ETHER)
    assert all(o.final_gradient is not None for o in drive.optimizations)
    client_b = server_b.connection("admin").client()
    [record_b] = [r for r in client_b.query_records(record_type="torsiondrive")]
    assert str(record_b.status.value) == "complete"
    record_a = embedded_server.connection("read").client().get_torsiondrives(drive.source_record_id)
    assert record_b.final_energies == record_a.final_energies
    # what a qcportal user sees: replayed, from which record, with the source's own provenance
    optimization = next(iter(record_b.minimum_optimizations.values()))
    provenance = optimization.compute_history[-1].provenance
    assert provenance.creator == "bespoke-fractal" and provenance.routine == "bespoke_fractal.cache.replay"
    assert provenance.model_extra["replayed_from"] == embedded_server.address
    assert provenance.model_extra["source_torsiondrive_id"] == drive.source_record_id
    assert provenance.model_extra["source_provenance"]["creator"] == "geomeTRIC"
    assert "Replayed by bespoke-fractal" in optimization.stdout
    assert len(optimization.trajectory) == 1


@pytest.fixture(scope="module")
def dataset_import(exported, embedded_server, server_b, computed):
    """Everything in A's debug/grid-90 dataset imported into B by dataset name (Python API)."""
    source = embedded_server.connection("read")
    archive, refused = read_server_drives(
        source.client(), SourceSelection(datasets=[SPEC.dataset_name]), source.address
    )
    return import_drives(
        archive, server_b.connection("submit"), server_b.connection("compute"), SPEC,
        refused=refused, stall_timeout=120,
    )  # fmt: skip


def test_import_from_a_server_by_dataset(dataset_import, computed, server_b):
    report = dataset_import
    butane, ether = (_record_id(computed, s) for s in (BUTANE, ETHER))
    imported = {d.source_record_id: d for d in report.imported}
    present = {d.source_record_id: d for d in report.already_present}
    assert butane in imported and imported[butane].replayed_tasks > 0
    assert ether in present  # came from the file already
    assert not report.failed, report.failed
    # other tests of the session may leave unfinished drives in A's dataset: those are refused
    assert all("status" in r.reason for r in report.refused), report.refused
    records = server_b.connection("admin").client().get_torsiondrives([imported[butane].record_id])
    assert str(records[0].status.value) == "complete"


def test_fit_against_b_computes_nothing_and_matches_a(dataset_import, computed, server_b, stage, tmp_path):
    schemas, results_a = computed
    schema = schemas[BUTANE]
    client_b = server_b.connection("admin").client()
    before = _counts(client_b)
    results_b = run_targets(
        TorsionDriveStage(server_b.connection("submit").client()), [schema], timeout=60, progress=False
    )
    assert _counts(client_b) == before and before[1] == 0
    for key, result in results_b.items():
        assert result.ok, result.error
        assert [p.energy_hartree for p in result.grid] == [p.energy_hartree for p in results_a[key].grid]
    fits = [
        optimize_schema(schema, profiles_from_results(schema, results), tmp_path / name, timeout=600)
        for name, results in (("a", {k: results_a[k] for k in results_b}), ("b", results_b))
    ]
    assert all(f.converged for f in fits), [f.message for f in fits]
    parameters = []
    for fit in fits:
        handler = ForceField(str(fit.offxml)).get_parameter_handler("ProperTorsions")
        parameters.append(
            {p.smirks: [k.m for k in p.k] for p in handler.parameters if p.id.startswith("bf-")}
        )
    assert parameters[0] and parameters[0] == parameters[1]


def test_reimport_is_a_no_op(exported, server_b):
    path, _export, _imported = exported
    client_b = server_b.connection("admin").client()
    before = _counts(client_b)
    report = import_drives(read_archive(path), server_b.connection("submit"), server_b.connection("compute"))
    assert len(report.already_present) == 1 and not report.imported and report.ok
    assert report.compute_tag is None and report.replayed_tasks == 0
    assert _counts(client_b) == before


def test_export_by_preset_and_import_without_one(dataset_import, server_b, tmp_path):
    """``export --preset`` finds the preset's datasets by their spec; ``import`` without
    ``--preset`` files each drive under the preset its specification matches."""
    directory = str(server_b.directory)
    path = tmp_path / "debug.json"
    export = invoke("cache", "export", "--file", str(path), "--preset", "debug", "--grid-spacing", "90",
                  "--directory", directory)  # fmt: skip
    assert export.exit_code == 0, export.output
    assert "wrote 2 drive(s)" in export.stdout
    drives = read_archive(path).drives
    assert {(d.spec.program, d.spec.grid_spacing) for d in drives} == {("rdkit", 90)}
    assert len({d.mapped_smiles for d in drives}) == 2  # butane's and the ether's
    missing = invoke("cache", "export", "--file", str(tmp_path / "x.json"), "--preset", "xtb",
                   "--directory", directory)  # fmt: skip
    assert missing.exit_code == 1 and "no drives of preset xtb" in missing.stderr
    assert not (tmp_path / "x.json").exists()
    client_b = server_b.connection("admin").client()
    before = _counts(client_b)
    imported = invoke("cache", "import", "--file", str(path), "--directory", directory)
    assert imported.exit_code == 0, imported.output
    assert "0 imported, 2 already present, 0 refused, 0 failed" in imported.stdout
    assert _counts(client_b) == before


def test_mismatched_specification_is_refused(exported, server_b):
    path, _export, _imported = exported
    client_b = server_b.connection("admin").client()
    before, datasets = _counts(client_b), len(client_b.list_datasets())
    report = import_drives(read_archive(path), server_b.connection("submit"), preset=get_preset("xtb"))
    [refused] = report.refused
    assert (
        "differs from preset xtb-gfn2" in refused.reason and "program rdkit (preset: xtb)" in refused.reason
    )
    assert not report.imported and not report.already_present
    cli = invoke("cache", "import", "--file", str(path), "--directory", str(server_b.directory),
               "--preset", "debug", "--grid-spacing", "30")  # fmt: skip
    assert cli.exit_code == 1
    [line] = [line for line in cli.stderr.splitlines() if line.startswith("Error:")]
    assert "grid spacing 90 (preset: 30)" in line
    assert _counts(client_b) == before and len(client_b.list_datasets()) == datasets


def test_bad_input_gives_one_error_line(server_b, embedded_server, tmp_path):
    corrupt = tmp_path / "drives.json.gz"
    corrupt.write_bytes(b"not gzip at all")
    unknown = tmp_path / "a.yaml"
    cases = [
        (["--file", str(corrupt)], "corrupt"),
        (["--file", str(tmp_path / "missing.json")], "does not exist"),
        (["--from", embedded_server.address, "--credentials",
          _credentials(unknown, embedded_server.connection("read")), "--dataset", "no such dataset"],
         "no torsion drive dataset named 'no such dataset'"),
        (["--from", "http://127.0.0.1:9", "--dataset", "x"], "cannot reach"),
    ]  # fmt: skip
    for args, phrase in cases:
        result = invoke("cache", "import", *args, "--directory", str(server_b.directory))
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:") and phrase in lines[0], result.output
        assert "Traceback" not in result.output


def test_import_refuses_while_wildcard_managers_run(computed, embedded_server, server_b):
    """A's managers take '*': replaying into A would race them, so it is refused."""
    client_a = embedded_server.connection("submit").client()
    archive, _ = read_server_drives(
        client_a, SourceSelection(record_ids=[_record_id(computed, BUTANE)]), "here"
    )
    # a drive A lacks: same torsion under another energy limit would be a new drive, so fake one
    archive.drives[0].spec.energy_upper_limit = 0.05
    from bespoke_fractal.cache import CacheError

    with pytest.raises(CacheError, match="stop the compute managers"):
        import_drives(
            archive,
            embedded_server.connection("submit"),
            preset=SPEC.model_copy(update={"energy_upper_limit": 0.05}),
        )
