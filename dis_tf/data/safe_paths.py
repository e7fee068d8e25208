"""Resolving dataset-relative paths without letting them escape the root.

Image-set lists and `annotations.jsonl` are data, not code: a line such as
`../../etc/passwd`, an absolute path or a symlink pointing outside the
dataset folder must never make a builder read (and store) a file that is
not part of the dataset.
"""

import os

from dis_tf import errors


class UnsafePathError(errors.UserError):
  """A path from a dataset index file points outside the dataset root."""


def resolve_inside(root, relative, source="", line=None):
  """Joins `relative` to `root`, refusing anything that leaves `root`.

  Args:
    root: the dataset root folder.
    relative: a path read from an index file (a list or annotations.jsonl).
    source: the index file the path came from (for the error message).
    line: 1-based line number in `source` (for the error message).

  Returns:
    The absolute, symlink-resolved path inside `root`.

  Raises:
    UnsafePathError: `relative` is absolute, contains a `..` component, or
      resolves (through symlinks) to a location outside `root`.
  """
  where = f"{source}:{line}" if line is not None else (source or "<input>")
  if not isinstance(relative, str) or not relative:
    raise UnsafePathError(f"{where}: empty or non-string path {relative!r}.")
  if os.path.isabs(relative) or relative.startswith(("/", "\\")) or (
      len(relative) > 1 and relative[1] == ":"):
    raise UnsafePathError(
        f"{where}: absolute path {relative!r} refused; paths must be relative "
        f"to the dataset root {root}.")
  parts = relative.replace("\\", "/").split("/")
  if ".." in parts:
    raise UnsafePathError(
        f"{where}: path {relative!r} contains '..' and could escape the "
        f"dataset root {root}; refused.")
  real_root = os.path.realpath(root)
  real = os.path.realpath(os.path.join(real_root, relative))
  if os.path.commonpath([real_root, real]) != real_root:
    raise UnsafePathError(
        f"{where}: path {relative!r} resolves to {real}, outside the dataset "
        f"root {real_root} (symlink out of the tree?); refused.")
  return real


def check_plain_name(name, source="", line=None):
  """Checks that an image-set entry is a bare file stem (no path parts).

  Args:
    name: an entry of a VOC `ImageSets/*/*.txt` list, e.g. "2007_000032".
    source: the list file (for the error message).
    line: 1-based line number (for the error message).

  Returns:
    `name` unchanged.

  Raises:
    UnsafePathError: `name` contains a path separator, is `.`/`..` or is
      absolute.
  """
  where = f"{source}:{line}" if line is not None else (source or "<input>")
  if (not name or "/" in name or "\\" in name or name in (".", "..")
      or os.path.isabs(name)):
    raise UnsafePathError(
        f"{where}: image-set entry {name!r} is not a plain image id (no "
        "directories, no '..'); refused.")
  return name
