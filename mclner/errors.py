"""Exceptions shared across mclner."""


class UserError(Exception):
    """A problem the user can fix (bad path, unknown name, malformed file, bad flag value).

    The command line prints it as one line, without a traceback. Messages name the thing at fault
    (file and line for data files).
    """


class DataFormatError(UserError, ValueError):
    """Malformed data file; the message starts with ``path:line:``."""
