"""The one exception type for bad user input.

Anything a user can get wrong (config keys and values, paths, data rows, shapes)
raises `UserError` with one line naming what and where. The CLI turns it into
that line on stderr and exit code 2; library callers can catch it.
"""


class UserError(ValueError):
    """Bad input from the user: config, CLI flags, files, data rows."""
