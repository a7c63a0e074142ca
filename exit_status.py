"""How every command of the benchmark ends: one exit-status contract, and one way an error becomes a message.

    0    OK             done; for a training run: the target WER was reached
    1    ERROR          the command failed: bad or missing data, a full disk, a network failure, ...
    2    USAGE          bad usage or parameters, found before any work was done
    3    TARGET_MISSED  a training run completed every epoch without reaching the target (MLPerf: aborted)
    130  INTERRUPTED    Ctrl-C; whatever was half done stays resumable

Every entry point raises UsageError (2) or Failure (1) subclasses with a message that names the file or
parameter, and `run(main)` turns them, and OSErrors, into one `error: ...` line and the status above,
never into a traceback.
"""

import errno
import sys
from collections.abc import Callable
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    TARGET_MISSED = 3
    INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line usage or parameters, found before any work: exit status 2."""


class Failure(Exception):
    """A failure the user can act on; the message names the file, URL or parameter: exit status 1."""


# OSError numbers whose plain words say more than Python's "[Errno 28] No space left on device".
_ADVICE = {
    errno.ENOSPC: "no space left on the device; free some space and re-run (finished work is kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and re-run (finished work is kept)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def describe_os_error(err: OSError, path=None) -> str:
    """'<path>: <what went wrong>' for an OSError, naming the file it was about (its own, or `path`)."""
    where = err.filename if err.filename is not None else path
    what = _ADVICE.get(err.errno) or err.strerror or str(err) or type(err).__name__
    return f"{where}: {what}" if where is not None else what


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def run(main: Callable[[], int | None]) -> int:
    """Call main() and return its status (None: OK), turning the errors every command shares into one
    message line and their status: UsageError -> 2, Failure and OSError -> 1, Ctrl-C -> 130."""
    try:
        status = main()
    except UsageError as err:
        error(str(err))
        return ExitStatus.USAGE
    except Failure as err:
        error(str(err))
        return ExitStatus.ERROR
    except OSError as err:
        error(describe_os_error(err))
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume where it stopped", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK if status is None else int(status)
