"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input, bad option or a bad file: the message is one self-contained sentence."""


class EngineError(UserError):
    """An engine directory that is missing, corrupt, truncated or does not match this install."""
