"""Errors that reach the user as one clear message (no traceback)."""


class DannasepError(Exception):
    """A problem the user can fix: the message names the file and the fix."""


class ConfigError(DannasepError):
    """The configuration is invalid."""


class DataError(DannasepError):
    """A dataset or audio file is missing, corrupt or of the wrong format."""


class DownloadError(DannasepError):
    """A download failed or its checksum does not match."""
