"""What the fragmenter and optimiser worker processes run; inputs and outputs are JSON text."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import TypeAdapter

from bespoke_fractal.schema.drives import TorsionDrive
from bespoke_fractal.server import ServerConnection

DRIVE_LIST = TypeAdapter(list[TorsionDrive])


def init_worker(environment: dict[str, str], coordinator_pid: int) -> None:
    """Keep a worker's numerical libraries to its own cores; end it with its coordinator."""
    import logging

    from bespoke_fractal.processes import die_with_parent

    die_with_parent(coordinator_pid)  # a worker that starts after its coordinator died does nothing
    os.environ.update(environment)
    logging.basicConfig(level=logging.WARNING)


def fragment_job(workflow_json: str, smiles: str, name: str, cache_directory: str) -> str:
    """The job description of one molecule, or its one-line error, as SchemaOutcome JSON."""
    from openff.toolkit import Molecule

    from bespoke_fractal.molecules import MoleculeInput
    from bespoke_fractal.workflow.batch import build_schema
    from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

    factory = BespokeWorkflowFactory.model_validate_json(workflow_json)
    molecule = Molecule.from_mapped_smiles(smiles, allow_undefined_stereo=True)
    outcome = build_schema(factory, MoleculeInput(name=name, molecule=molecule), cache_directory)
    return outcome.model_dump_json(by_alias=True)


def optimize_job(
    schema_json: str,
    drives_json: str,
    connection: ServerConnection,
    output_directory: str,
    n_cores: int,
    timeout: float,
    keep_worse: bool,
) -> str:
    """Read the job's torsion profiles from the server and fit; OptimizationResult JSON."""
    from bespoke_fractal.executor.drives import job_results, parent_profiles
    from bespoke_fractal.optimization.stage import optimize_schema, usable_profiles
    from bespoke_fractal.qc.torsiondrive import TorsionDriveStage
    from bespoke_fractal.schema.workflow import BespokeOptimizationSchema

    schema = BespokeOptimizationSchema.model_validate_json(schema_json)
    drives = DRIVE_LIST.validate_json(drives_json)
    stage = TorsionDriveStage(connection.client())
    # each drive read in this job's own atom order (a drive shared with another job may have
    # been recorded in that job's); the parent's drives (drive_parent) are scored, not fitted
    results, parent_results = job_results(stage, schema, drives)
    profiles, unfitted = usable_profiles(schema, results)
    parents = parent_profiles(schema, parent_results)
    result = optimize_schema(
        schema,
        profiles,
        Path(output_directory),
        n_cores=n_cores,
        timeout=timeout,
        keep_worse=keep_worse,
        unfitted=unfitted,
        parent_profiles=parents,
    )
    return result.model_dump_json()
