"""The workflow model (every choice of a fit) and the job description of each molecule."""

from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow.batch import SchemaOutcome, build_schemas, unique_drives
from bespoke_fractal.workflow.factory import (
    DEFAULT_FORCE_FIELD,
    BespokeWorkflowFactory,
    list_workflow_presets,
)

__all__ = [
    "DEFAULT_FORCE_FIELD",
    "BespokeOptimizationSchema",
    "BespokeWorkflowFactory",
    "SchemaOutcome",
    "build_schemas",
    "list_workflow_presets",
    "unique_drives",
]
