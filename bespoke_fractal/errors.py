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
