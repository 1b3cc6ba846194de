"""The job store: jobs, their stages, fragmentations and fits in one SQLAlchemy database.

SQLite in the executor's directory by default (WAL, so `submit`/`watch` from other processes
read and write while the coordinator runs), any SQLAlchemy URL otherwise. QC results are not
copied here: they live on the QCFractal server and jobs refer to them by record id. Every stage
transition is one committed transaction, so a coordinator killed at any moment resumes from the
last finished stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ForeignKey, Integer, String, Text, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.executor.models import (
    STAGES,
    BespokeExecutorOutput,
    BespokeStageOutput,
    QCProgress,
    StageType,
    Status,
)
from bespoke_fractal.executor.workers import DRIVE_LIST
from bespoke_fractal.schema.drives import TorsionDrive
from bespoke_fractal.schema.fits import OptimizationResult
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema

DATABASE_NAME = "jobs.sqlite"


class JobStoreError(BespokeFractalError):
    """The job store cannot be opened or a job does not exist."""


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    smiles: Mapped[str] = mapped_column(Text, doc="mapped SMILES with explicit hydrogens")
    workflow: Mapped[str] = mapped_column(Text, doc="the workflow factory as JSON")
    schema_id: Mapped[str] = mapped_column(String(40), index=True)
    schema_json: Mapped[str | None] = mapped_column(Text, default=None)
    drives: Mapped[str | None] = mapped_column(Text, default=None, doc="TorsionDrive list as JSON")
    qc_progress: Mapped[str | None] = mapped_column(Text, default=None)
    fit_key: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    status: Mapped[str] = mapped_column(String(16), default="waiting", index=True)
    created_at: Mapped[datetime] = mapped_column(default=datetime.now)
    stages: Mapped[list[StageRow]] = relationship(
        back_populates="job", order_by="StageRow.position", cascade="all, delete-orphan"
    )


class StageRow(Base):
    __tablename__ = "stages"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    type: Mapped[str] = mapped_column(String(20), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    job: Mapped[JobRow] = relationship(back_populates="stages")


class FitRow(Base):
    """One finished fit, shared by every job with the same job description and QC records."""

    __tablename__ = "fits"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    result: Mapped[str] = mapped_column(Text, doc="OptimizationResult as JSON")
    created_at: Mapped[datetime] = mapped_column(default=datetime.now)


def fit_key(schema_json: str, record_ids: list[int]) -> str:
    """Identity of a fit: the job description (as stored) and the QC records it is fitted to."""
    text = json.dumps([json.loads(schema_json), sorted(record_ids)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class JobRecord(BaseModel):
    """One job as the coordinator reads it: its input, job description, drives and QC progress."""

    model_config = ConfigDict(frozen=True)

    id: int
    name: str
    smiles: str = Field(description="mapped SMILES with explicit hydrogens")
    workflow_json: str = Field(description="the workflow factory as JSON")
    schema_id: str
    schema_text: str | None = Field(
        None, description="the job description as stored JSON; None until fragmented"
    )
    drives: list[TorsionDrive] | None = Field(None, description="the QC drives; None until submitted")
    qc_progress: QCProgress = Field(default_factory=QCProgress)
    fit_key: str | None = None
    status: Status

    @cached_property
    def optimization_schema(self) -> BespokeOptimizationSchema:
        """The job description (read once)."""
        if self.schema_text is None:
            raise JobStoreError(f"job {self.id} has not been fragmented")
        return BespokeOptimizationSchema.model_validate_json(self.schema_text)

    @property
    def record_ids(self) -> list[int]:
        """QC record ids of the job's drives."""
        return [drive.record_id for drive in self.drives or []]

    def needed_fit_key(self) -> str:
        """The key of the fit this job needs: its job description and QC records."""
        if self.schema_text is None:
            raise JobStoreError(f"job {self.id} has not been fragmented")
        return fit_key(self.schema_text, self.record_ids)

    @classmethod
    def from_row(cls, row: JobRow) -> JobRecord:
        drives = None if row.drives is None else DRIVE_LIST.validate_json(row.drives)
        progress = QCProgress.model_validate_json(row.qc_progress) if row.qc_progress else QCProgress()
        return cls(
            id=row.id,
            name=row.name,
            smiles=row.smiles,
            workflow_json=row.workflow,
            schema_id=row.schema_id,
            schema_text=row.schema_json,
            drives=drives,
            qc_progress=progress,
            fit_key=row.fit_key,
            status=row.status,
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class JobStore:
    """Create, read and change jobs; each method is one transaction."""

    def __init__(self, url: str, read_only: bool = False, label: str | None = None) -> None:
        self.url = url
        self.read_only = read_only
        self.label = label
        try:
            connect_args = {"timeout": 60, "check_same_thread": False} if url.startswith("sqlite") else {}
            self.engine: Engine = create_engine(url, connect_args=connect_args)
            if url.startswith("sqlite") and not read_only:
                event.listen(self.engine, "connect", _sqlite_pragmas)
            if not read_only:
                Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise JobStoreError(f"cannot open the job store {self._safe_url}: {self._reason(exc)}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def in_directory(cls, directory: str | Path, url: str | None = None) -> JobStore:
        """The store of an executor directory (SQLite there unless ``url`` names another)."""
        if url:
            return cls(url)
        directory = Path(directory).absolute()
        if not directory.is_dir():
            raise JobStoreError(f"no executor directory {directory}")
        path = directory / DATABASE_NAME
        if path.exists() and not os.access(directory, os.W_OK):
            # an archived, read-only directory: its jobs can still be listed and retrieved
            return cls(f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true", read_only=True, label=str(path))
        return cls(f"sqlite:///{path}", label=str(path))

    def _reason(self, exc: SQLAlchemyError) -> str:
        """The database's own reason, with the free space when SQLite only says "disk I/O"."""
        reason = _reason(exc)
        if self.label and ("disk" in reason or "full" in reason):
            free = shutil.disk_usage(Path(self.label).parent).free
            if free < 1 << 20:
                return f"no space left on the device ({free // 1024} KiB free; SQLite: {reason})"
        return reason

    @property
    def _safe_url(self) -> str:
        if self.label:
            return self.label
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - never show a malformed URL that may hold a password
            return "(database URL)"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; a database failure (full disk, read-only file) is one clear line."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            where = "the read-only job store" if self.read_only else "the job store"
            raise JobStoreError(f"{where} {self._safe_url}: {self._reason(exc)}") from None

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs ------------------------------------------------------------------------------
    def add_job(
        self,
        name: str,
        smiles: str,
        workflow_json: str,
        schema_id: str,
        schema_json: str | None = None,
        note: str = "job description given at submission",
        attempts: int = 0,
    ) -> str:
        """A new job; with ``schema_json`` its fragmentation is already done (``attempts``
        fragmentations were run for it, ``note`` says how)."""
        with self.session() as session:
            job = JobRow(name=name, smiles=smiles, workflow=workflow_json, schema_id=schema_id)
            job.stages = [StageRow(type=stage, position=i) for i, stage in enumerate(STAGES)]
            if schema_json is not None:
                job.schema_json = schema_json
                stage = job.stages[0]
                stage.status, stage.note, stage.attempts = "success", note, attempts
                stage.started_at = stage.finished_at = datetime.now()
            session.add(job)
            session.flush()
            return str(job.id)

    def job(self, session: Session, job_id: str | int) -> JobRow:
        job = session.get(JobRow, _int_id(job_id))
        if job is None:
            raise JobStoreError(f"no job {job_id}")
        return job

    def output(self, job_id: str | int) -> BespokeExecutorOutput:
        with self.session() as session:
            return self._output(session, self.job(session, job_id))

    def outputs(self, status: Status | None = None) -> list[BespokeExecutorOutput]:
        with self.session() as session:
            query = select(JobRow).order_by(JobRow.id)
            if status:
                query = query.where(JobRow.status == status)
            return [self._output(session, job) for job in session.scalars(query)]

    def jobs_in_stage(self, stage: StageType, status: Status) -> list[int]:
        """Ids of jobs whose ``stage`` has ``status`` and whose earlier stages succeeded."""
        with self.session() as session:
            return [job.id for job in self._in_stage(session, stage, status)]

    def job_records(self, stage: StageType, status: Status) -> list[JobRecord]:
        """Jobs whose ``stage`` has ``status`` and whose earlier stages succeeded."""
        with self.session() as session:
            return [JobRecord.from_row(job) for job in self._in_stage(session, stage, status)]

    def job_record(self, job_id: str | int) -> JobRecord:
        with self.session() as session:
            return JobRecord.from_row(self.job(session, job_id))

    def _in_stage(self, session: Session, stage: StageType, status: Status) -> list[JobRow]:
        query = (
            select(JobRow)
            .join(StageRow)
            .where(JobRow.status.in_(("waiting", "running")))
            .where(StageRow.type == stage, StageRow.status == status)
            .order_by(JobRow.id)
        )
        jobs = list(session.scalars(query))
        earlier = STAGES[: STAGES.index(stage)]
        if not earlier:
            return jobs
        return [job for job in jobs if all(s.status == "success" for s in job.stages if s.type in earlier)]

    def reset_interrupted(self) -> list[int]:
        """Stages left running by a coordinator that died go back to waiting (QC is kept
        running: its drives are on the server). Returns the affected job ids."""
        with self.session() as session:
            query = select(StageRow).where(
                StageRow.status == "running", StageRow.type.in_(("fragmentation", "optimization"))
            )
            rows = list(session.scalars(query))
            for row in rows:
                row.status = "waiting"
                row.note = "interrupted; restarted"
            return [row.job_id for row in rows]

    def start_stage(self, job_id: int, stage: StageType, note: str = "") -> None:
        with self.session() as session:
            job = self.job(session, job_id)
            row = _stage(job, stage)
            row.status, row.note, row.attempts = "running", note, row.attempts + 1
            row.started_at, row.finished_at, row.error = datetime.now(), None, None
            job.status = "running"

    def finish_stage(
        self,
        job_id: int,
        stage: StageType,
        *,
        error: str | None = None,
        note: str | None = None,
        schema_json: str | None = None,
        qc_progress: QCProgress | None = None,
        fit_key: str | None = None,
    ) -> None:
        """End a stage (errored when ``error`` is given); the job description, QC progress and
        fit key given are stored on the job."""
        with self.session() as session:
            job = self.job(session, job_id)
            row = _stage(job, stage)
            row.status = "errored" if error else "success"
            row.error = error
            if note is not None:
                row.note = note
            if row.started_at is None:
                row.started_at = datetime.now()
            row.finished_at = datetime.now()
            if schema_json is not None:
                job.schema_json = schema_json
            if qc_progress is not None:
                job.qc_progress = qc_progress.model_dump_json()
            if fit_key is not None:
                job.fit_key = fit_key
            if error:
                job.status = "errored"
            elif stage == STAGES[-1]:
                job.status = "success"

    def stage_attempts(self, job_id: int, stage: StageType) -> int:
        with self.session() as session:
            return _stage(self.job(session, job_id), stage).attempts

    def retry_stage(self, job_id: int, stage: StageType, note: str) -> None:
        """Put a stage that was cut short back to waiting (its attempts are kept)."""
        with self.session() as session:
            row = _stage(self.job(session, job_id), stage)
            row.status, row.note, row.finished_at = "waiting", note, None

    def set_note(self, job_id: int, stage: StageType, note: str) -> None:
        with self.session() as session:
            _stage(self.job(session, job_id), stage).note = note

    def set_fields(self, job_id: int, **fields: str | None) -> None:
        """Store raw column values on a job (prefer the typed setters below)."""
        with self.session() as session:
            job = self.job(session, job_id)
            for name, value in fields.items():
                setattr(job, name, value)

    def set_drives(self, job_id: int, drives: list[TorsionDrive], progress: QCProgress) -> None:
        """Store the QC drives a job waits for and their progress."""
        with self.session() as session:
            job = self.job(session, job_id)
            job.drives = DRIVE_LIST.dump_json(drives).decode()
            job.qc_progress = progress.model_dump_json()

    def set_qc_progress(self, job_id: int, progress: QCProgress) -> None:
        with self.session() as session:
            self.job(session, job_id).qc_progress = progress.model_dump_json()

    def schema(self, job_id: str | int) -> BespokeOptimizationSchema | None:
        """The job description of a job (None until it has been fragmented)."""
        with self.session() as session:
            text = self.job(session, job_id).schema_json
        return None if text is None else BespokeOptimizationSchema.model_validate_json(text)

    def find_schema(self, schema_id: str) -> str | None:
        """A finished job description with this id from any earlier job."""
        with self.session() as session:
            query = select(JobRow.schema_json).where(
                JobRow.schema_id == schema_id, JobRow.schema_json.is_not(None)
            )
            return session.scalars(query.limit(1)).first()

    # -- fits ------------------------------------------------------------------------------
    def fit(self, key: str) -> OptimizationResult | None:
        with self.session() as session:
            row = session.get(FitRow, key)
            return None if row is None else OptimizationResult.model_validate_json(row.result)

    def add_fit(self, key: str, result: OptimizationResult) -> None:
        with self.session() as session:
            session.merge(FitRow(key=key, result=result.model_dump_json()))

    # -- conversion ------------------------------------------------------------------------
    def _output(self, session: Session, job: JobRow) -> BespokeExecutorOutput:
        result = None
        offxml = None
        if job.fit_key:
            row = session.get(FitRow, job.fit_key)
            if row is not None:
                result = OptimizationResult.model_validate_json(row.result)
                if result.offxml and Path(result.offxml).exists():
                    offxml = Path(result.offxml).read_text()
        return BespokeExecutorOutput(
            id=str(job.id),
            name=job.name,
            smiles=job.smiles,
            status=job.status,
            stages=[BespokeStageOutput.model_validate(stage, from_attributes=True) for stage in job.stages],
            qc=QCProgress.model_validate_json(job.qc_progress) if job.qc_progress else QCProgress(),
            results=result,
            offxml=offxml,
            created_at=job.created_at,
        )


def _stage(job: JobRow, stage: StageType) -> StageRow:
    return next(row for row in job.stages if row.type == stage)


def _int_id(job_id: str | int) -> int:
    try:
        return int(job_id)
    except (TypeError, ValueError):
        raise JobStoreError(f"no job {job_id!r} (job ids are numbers)") from None


def _reason(exc: SQLAlchemyError) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0] if text else type(exc).__name__
