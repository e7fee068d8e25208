"""Lock files: one training run per model_dir, one tfds prepare per data_dir.

A lock is a small JSON file created with `O_CREAT | O_EXCL` (atomic on a
local file system: of two processes, exactly one creates it). It names its
holder: pid, host, start time and command line. A second process gets a
`LockHeldError` naming them. The holder removes the file on exit, also on
an exception; a SIGKILL (or power loss) cannot, so a lock whose pid is dead
**on this host** is stale: it is taken over with a warning. A lock of
another host cannot be checked and is never taken over; the message says
which file to delete if that run is known to be dead.

Taking over is race-free: the stale file is renamed to a private name and
read back; if what was moved is not the stale lock that was judged (another
process took it over in between), it is put back with `os.link`, which
fails rather than overwrite.
"""

import contextlib
import json
import os
import socket
import sys
import time
import uuid

from absl import logging

from dis_tf import atomic
from dis_tf import errors

TRAIN_LOCK = "train.lock"
PREPARE_LOCK = ".prepare.lock"


class LockHeldError(errors.UserError, RuntimeError):
  """Another live (or unverifiable) process holds the lock."""


def _start_ticks(pid):
  """The start time of `pid` in clock ticks since boot (Linux), or None.

  With it, a pid reused by an unrelated process is not mistaken for the
  holder.
  """
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      stat = f.read().decode("utf-8", "replace")
  except OSError:
    return None
  # Field 22; the command name (field 2) may hold spaces and parentheses.
  fields = stat.rpartition(")")[2].split()
  try:
    return int(fields[19])
  except (IndexError, ValueError):
    return None


def _pid_alive(pid, start_ticks=None):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Exists, owned by another user.
  if start_ticks is not None:
    now = _start_ticks(pid)
    if now is not None and now != start_ticks:
      return False  # The pid was reused.
  return True


def _describe(holder):
  text = f"pid {holder.get('pid')} on host {holder.get('host')!r}"
  return text + (f", since {holder['started']}" if holder.get("started")
                 else "")


def _read(path):
  """The holder recorded in `path`, {} if unreadable, None if missing."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    return None
  try:
    holder = json.loads(text)
    return holder if isinstance(holder, dict) else {}
  except ValueError:
    return {}  # Killed between create and write: no holder recorded.


class FileLock:
  """An exclusive lock file; use as a context manager.

  Args:
    path: the lock file (its directory is created).
    what: what the lock protects, for messages ("training run in
      --model_dir=...").
  """

  def __init__(self, path, what):
    self.path = path
    self.what = what
    self.token = None

  def _create(self):
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_ticks": _start_ticks(os.getpid()),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": sys.argv,
        "token": uuid.uuid4().hex,
    }
    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
      os.write(fd, json.dumps(holder).encode("utf-8"))
      os.fsync(fd)
    finally:
      os.close(fd)
    atomic.fsync_path(os.path.dirname(self.path) or ".")
    self.token = holder["token"]

  def _stale(self, holder):
    """True if `holder` is dead on this host (the lock may be taken over)."""
    if holder.get("host") != socket.gethostname():
      return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
      # No holder written (killed right after creating the file): stale
      # once older than a minute.
      try:
        return time.time() - os.path.getmtime(self.path) > 60
      except OSError:
        return True
    return not _pid_alive(pid, holder.get("start_ticks"))

  def _take_over(self, holder):
    """Moves the stale lock aside; False if another process was faster."""
    aside = f"{self.path}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    moved = _read(aside)
    if moved != holder:
      # Someone took it over between our read and the rename: restore it.
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
      os.remove(aside)
      return False
    os.remove(aside)
    return True

  def acquire(self, wait_seconds=0.0, poll_seconds=0.5):
    """Creates the lock file.

    Args:
      wait_seconds: while a live holder has the lock, retry for this long
        (0: fail at once).
      poll_seconds: time between retries.

    Returns:
      self.

    Raises:
      LockHeldError: naming the holder's pid and host.
    """
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    contended, announced = 0, False
    while True:
      try:
        self._create()
        return self
      except FileExistsError:
        pass
      holder = _read(self.path)
      if holder is None:
        continue  # Released meanwhile.
      if self._stale(holder):
        if self._take_over(holder):
          logging.warning("Took over the stale lock %s of the %s (its "
                          "holder, %s, is no longer running).", self.path,
                          self.what, _describe(holder))
          print(f"Warning: took over the stale lock {self.path} (holder "
                f"{_describe(holder)} is dead).", file=sys.stderr,
                flush=True)
        else:
          contended += 1
          if contended >= 5:
            raise LockHeldError(f"Could not take the lock {self.path} of "
                                f"the {self.what}: contended; try again.")
        continue
      if time.monotonic() >= deadline:
        raise LockHeldError(
            f"Another process holds the lock of the {self.what}: "
            f"{_describe(holder)} (lock file {self.path}). Wait for it to "
            "finish; if it is dead, delete the lock file.")
      if not announced:
        announced = True
        logging.warning("Waiting (up to %.0f s) for %s, which holds the lock "
                        "of the %s.", wait_seconds, _describe(holder),
                        self.what)
      time.sleep(poll_seconds)

  def release(self):
    """Removes the lock file if it is still this process's."""
    if self.token is None:
      return
    holder = _read(self.path)
    if holder and holder.get("token") == self.token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self.token = None

  def __enter__(self):
    # `with lock:` acquires; `with lock.acquire(wait_seconds):` already has.
    return self if self.token is not None else self.acquire()

  def __exit__(self, *exc):
    self.release()
    return False


def train_lock(model_dir):
  """The lock of a training run in `model_dir` (`model_dir/train.lock`)."""
  return FileLock(os.path.join(model_dir, TRAIN_LOCK),
                  f"training run in --model_dir={model_dir}")


def prepare_lock(data_dir):
  """The lock of a tfds prepare in `data_dir` (`data_dir/.prepare.lock`)."""
  return FileLock(os.path.join(data_dir, PREPARE_LOCK),
                  f"dataset preparation in --data_dir={data_dir}")


@contextlib.contextmanager
def held(lock, enabled=True):
  """`with held(lock, enabled):` the lock, or nothing when not enabled."""
  if not enabled:
    yield None
    return
  with lock:
    yield lock
