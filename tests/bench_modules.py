"""A bench/ script imported by path, for tests of its pure functions."""

import importlib.util
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "bench")


def load(name):
  """bench/<name>.py as a module (bench/ on sys.path while it imports, for
  its `import common`)."""
  sys.path.insert(0, BENCH)
  try:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(BENCH)
  return module
