"""Atomic file writes: the one way `dis_tf` commits a file.

Every file a later run reads (checkpoints, backups, `config.json`,
`model.keras`, reports) is written to a temp file next to its final name,
flushed and fsynced, renamed over the final name, and the directory is
fsynced, so a SIGKILL or power loss leaves either the old file or the new
one, never a truncated one. On an error the temp file is removed.

A SIGKILL cannot run any cleanup, so it can leave a temp file behind. Temp
names follow one pattern, `<stem>.tmp.<suffixes>` (`phase_a.tmp.weights.h5`,
`model.tmp.keras`, `config.tmp.json`): Keras picks the file format from the
suffix, so the suffix is kept. `remove_stale_temp_files` deletes files of
that pattern, and only those, when a run starts.
"""

import contextlib
import json
import os
import re
import shutil

# `<stem>.tmp` followed by the original suffixes (or nothing).
_TEMP_NAME = re.compile(r"^[^.]+\.tmp(\.|$)")


def temp_path(path):
  """The temp name `atomic_write` uses for `path` (same directory)."""
  directory, name = os.path.split(path)
  stem, dot, suffixes = name.partition(".")
  return os.path.join(directory, f"{stem}.tmp{dot}{suffixes}")


def is_temp_name(name):
  """True if the base name `name` is one of `temp_path`'s temp names."""
  return bool(_TEMP_NAME.match(name))


def _remove_quietly(path):
  try:
    os.remove(path)
  except OSError:
    pass


def fsync_path(path):
  """fsyncs a file or a directory (its entries: a rename's commit)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
  """Context manager: write to the yielded temp path; commit on exit.

  Example:
    with atomic_write("run/model.keras") as tmp:
      model.save(tmp)

  Args:
    path: the final file name.

  Yields:
    The temp path to write (same directory and suffix as `path`).

  Raises:
    Whatever the body raises; the temp file is removed and `path` is left
    as it was.
  """
  directory = os.path.dirname(path) or "."
  os.makedirs(directory, exist_ok=True)
  tmp = temp_path(path)
  try:
    yield tmp
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(directory)
  except BaseException:
    _remove_quietly(tmp)
    raise


def _fsync_tree(root):
  """fsyncs every file and directory under `root` (and `root`)."""
  for dirpath, _, files in os.walk(root):
    for name in files:
      fsync_path(os.path.join(dirpath, name))
    fsync_path(dirpath)


def commit_directory(tmp_dir, path):
  """Renames the finished directory `tmp_dir` to `path`, durably.

  Every file and directory under `tmp_dir` is fsynced first, so that after
  the rename (and the fsync of the parent directory) `path` is complete
  even after a power loss. `path` must not exist (a directory rename does
  not replace a non-empty one).

  Args:
    tmp_dir: a directory written completely, on the file system of `path`.
    path: the final name.
  """
  _fsync_tree(tmp_dir)
  os.rename(tmp_dir, path)
  fsync_path(os.path.dirname(path) or ".")


@contextlib.contextmanager
def directory_write(path, replace=False):
  """Yields a temp directory name (not yet created) that becomes `path`
  when the block succeeds (`commit_directory`).

  A temp directory left by a killed run is removed first; on an error the
  temp directory is removed and `path` is left as it was.

  Args:
    path: the final directory.
    replace: remove an existing `path` before the rename (callers that
      refuse an existing folder check it before any work).
  """
  tmp = temp_path(os.path.normpath(path))
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    yield tmp
    if replace and os.path.exists(path):
      shutil.rmtree(path)
    commit_directory(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def set_aside(path, suffix=".corrupt"):
  """Renames an unreadable committed file to `path + suffix` (kept for
  inspection, never read again); returns the new name."""
  target = path + suffix
  os.replace(path, target)
  fsync_path(os.path.dirname(path) or ".")
  return target


def write_text(path, text):
  """Writes the string `text` to `path` atomically (UTF-8)."""
  with atomic_write(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(path, value, **dump_kwargs):
  """Writes `value` as JSON to `path` atomically; kwargs go to json.dump."""
  write_text(path, json.dumps(value, **dump_kwargs))


def remove_stale_temp_files(directory, skip=("workers",)):
  """Deletes temp files left by killed writers under `directory`.

  Only names of the `temp_path` pattern are touched; call it only on a
  directory this process owns (no other writer is running there).

  Args:
    directory: the root to clean (e.g. a model_dir).
    skip: top-level subdirectory names not to enter (other processes'
      directories, e.g. multi-worker workers).

  Returns:
    The removed paths, sorted.
  """
  removed = []
  for root, dirs, files in os.walk(directory):
    if root == directory:
      dirs[:] = [d for d in dirs if d not in skip]
    for name in files:
      if is_temp_name(name):
        path = os.path.join(root, name)
        _remove_quietly(path)
        removed.append(path)
  return sorted(removed)
