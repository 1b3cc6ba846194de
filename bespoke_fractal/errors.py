"""Exceptions whose message is one clear line for the user."""


class BespokeFractalError(Exception):
    """Base class: the message is shown to the user as it is."""


class ServerError(BespokeFractalError):
    """The QCFractal server (or its PostgreSQL) could not be started, stopped or reached."""


class CredentialsError(BespokeFractalError):
    """Credentials are missing, unreadable or rejected."""


class ManagerError(BespokeFractalError):
    """A compute manager could not be started or stopped."""


class TorsionDriveError(BespokeFractalError):
    """A torsion drive could not be submitted or did not complete."""


class MoleculeInputError(BespokeFractalError):
    """A molecule could not be read, or cannot be fitted as given."""


class NothingToFitError(BespokeFractalError):
    """A molecule has no bond matched by the workflow's target torsion SMARTS."""


class WorkflowError(BespokeFractalError):
    """A workflow file or setting is invalid."""


class FragmentationError(BespokeFractalError):
    """The fragmenter failed on a molecule."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def validation_line(exc: Exception) -> str:
    """A pydantic ``ValidationError`` as one line, ``field.path: message`` of its first error;
    any other exception as :func:`first_line`."""
    errors = getattr(exc, "errors", None)
    if not callable(errors) or not errors():
        return first_line(exc)
    error = errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
