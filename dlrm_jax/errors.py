"""The one exception type for bad user input.

Anything a user can get wrong (config keys and values, paths, data rows, shapes)
raises `UserError` with one line naming what and where. The CLI turns it into
that line on stderr and exit code 2; library callers can catch it.
"""


class UserError(ValueError):
    """Bad input from the user: config, CLI flags, files, data rows."""


# Causes of a failed write that the user fixes outside the program (space, quota,
# permissions, a file-size limit); the run resumes once they are fixed.
_WRITE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES"}
_WRITE_MESSAGES = ("no space left on device", "disk quota exceeded", "file too large",
                   "read-only file system")


def write_error(err: BaseException) -> str | None:
    """One line for a write that failed for want of space, quota or permission, else None.

    Looks through the exception's causes: Orbax and TensorStore wrap the OSError
    (or only keep its message), several layers deep."""
    import errno as errno_lib
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = getattr(err, "errno", None)
        if isinstance(err, OSError) and code is not None and errno_lib.errorcode.get(code) in _WRITE_ERRNOS:
            where = f"cannot write {err.filename}" if err.filename else "cannot write"
            return f"{where}: {err.strerror or err}"
        text = str(err).lower()
        for message in _WRITE_MESSAGES:
            if message in text:
                return f"cannot write: {message} ({_first_line(str(err))})"
        err = err.__cause__ or err.__context__
    return None


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."
