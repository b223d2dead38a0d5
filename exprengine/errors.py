"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""
import errno

#: OSError numbers that are about the disk, not the data (full, over quota, read-only, a file or
#: name too large): wherever they occur while writing, they are the user's to fix.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENAMETOOLONG})


class UserError(Exception):
    """Bad input, bad option or a bad file: the message is one self-contained sentence."""


class EngineError(UserError):
    """An engine directory that is missing, corrupt, truncated or does not match this install."""
