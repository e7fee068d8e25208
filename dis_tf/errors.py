"""The project's user-facing errors, and how every tool reports them.

A `UserError` is a mistake the person running a tool can fix: a missing or
wrong flag value, a file that does not exist or cannot be read, an export
version that is already there. Its message names the flag, file or value and
says what to do. `run(main)` is every tool's `app.run`: it prints such an
error as one line,

  error: --model_dir=runs/x: no such directory.

on stderr and exits with status 1 (2 for a command-line flag that does not
parse, as absl does), instead of a traceback with the useful sentence on its
last line. Any other exception is a bug or an environment failure and keeps
its traceback.

`UserError` subclasses `ValueError` (most user mistakes are bad values, and
library callers catching `ValueError` keep working); `MissingFileError` is
also a `FileNotFoundError`, `UnwritablePathError` an `OSError` and
`PathExistsError` a `FileExistsError` and `CorruptFileError` an
`OSError`, for callers that catch those.
"""

import sys

from absl import app
from absl import flags

# Exit statuses: 1 for a user error (absl's for a UsageError), 2 for a
# command line that does not parse (the shell convention for usage errors).
USER_ERROR_EXIT = 1
FLAG_ERROR_EXIT = 2


class UserError(ValueError):
  """A mistake the user can fix; the message says which and how."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user named (or a run needs) does not exist."""


class UnwritablePathError(UserError, OSError):
  """A path the user named cannot be written."""


class PathExistsError(UserError, FileExistsError):
  """A path the user named exists and would be overwritten."""


class CorruptFileError(UserError, OSError):
  """A file the run needs cannot be read; the message says how to rebuild."""


def message(error):
  """The one line shown for `error` (newlines folded into spaces)."""
  return " ".join(str(error).split())


def report(error, stream=None):
  """Prints `error: <message>` as one line on `stream` (default stderr)."""
  print(f"error: {message(error)}", file=stream or sys.stderr, flush=True)


def _parse_flags(argv):
  """absl's flag parsing, with a parse error reported as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    report(e)
    sys.exit(FLAG_ERROR_EXIT)


def catch_user_errors(main):
  """Wraps a tool's `main`: a `UserError` or `app.UsageError` -> one line.

  Args:
    main: the tool's `main(argv)`.

  Returns:
    A `main(argv)` that exits with `USER_ERROR_EXIT` after printing the
    error's one line; other exceptions pass through with their traceback.
  """
  def wrapped(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as e:
      report(e)
      sys.exit(USER_ERROR_EXIT)
  wrapped.__doc__ = main.__doc__
  return wrapped


def run(main):
  """`app.run(main)` for a tool: flag and user errors are one line each."""
  app.run(catch_user_errors(main), flags_parser=_parse_flags)
