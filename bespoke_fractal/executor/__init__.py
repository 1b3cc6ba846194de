"""The bespoke executor: fragmentation and optimisation workers here, QC on QCFractal."""

from bespoke_fractal.executor.client import (
    JobClient,
    Submission,
    resolve_workflow,
    submit_plan,
    submit_to_store,
)
from bespoke_fractal.executor.config import BespokeWorkerConfig
from bespoke_fractal.executor.executor import BespokeExecutor, wait_until_complete
from bespoke_fractal.executor.models import BespokeExecutorOutput, BespokeStageOutput, QCProgress
from bespoke_fractal.executor.plan import MoleculePlan, QCPlan, plan_jobs
from bespoke_fractal.executor.service import ExecutorError
from bespoke_fractal.executor.store import JobStore, JobStoreError

__all__ = [
    "BespokeExecutor",
    "BespokeExecutorOutput",
    "BespokeStageOutput",
    "BespokeWorkerConfig",
    "ExecutorError",
    "JobClient",
    "JobStore",
    "JobStoreError",
    "MoleculePlan",
    "QCPlan",
    "QCProgress",
    "Submission",
    "plan_jobs",
    "resolve_workflow",
    "submit_plan",
    "submit_to_store",
    "wait_until_complete",
]
