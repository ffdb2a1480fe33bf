"""The one exception type for bad user input.

Anything a user can get wrong (config keys and values, paths, data rows, shapes)
raises `UserError` with one line naming what and where. The CLI turns it into
that line on stderr and exit code 2; library callers can catch it.
"""
import os


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
    (or keep only its message, with the path and errno inside), several layers deep."""
    import errno as errno_lib
    import re
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        code = getattr(err, "errno", None)
        if isinstance(err, OSError) and code is not None and errno_lib.errorcode.get(code) in _WRITE_ERRNOS:
            where = f"cannot write {err.filename}" if err.filename else "cannot write"
            return f"{where}: {err.strerror or err}"
        text = str(err)
        code = re.search(r"os_error_code='?(\d+)", text)
        message = next((m for m in _WRITE_MESSAGES if m in text.lower()), None)
        if message or (code and errno_lib.errorcode.get(int(code.group(1))) in _WRITE_ERRNOS):
            path = re.search(r'(?:Failed writing|local file|file):? "([^"]+)"', text)
            cause = os.strerror(int(code.group(1))) if code else message
            return f"cannot write {path.group(1)}: {cause}" if path else f"cannot write: {cause}"
        err = err.__cause__ or err.__context__
    return None
