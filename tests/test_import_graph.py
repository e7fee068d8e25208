"""The import graph of dis_tf points down: a test that reads the imports.

Layers, lowest first; a module may import its own layer and the layers
below it, never one above. The research package (the study behind
RESULTS.md) is the top: the library never imports it.
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "dis_tf")

# The lowest layer that each package or module belongs to.
LAYERS = [
    # 0: leaves and shared utilities.
    {"dis_tf.errors", "dis_tf.atomic", "dis_tf.locks", "dis_tf.classes",
     "dis_tf.config", "dis_tf.image_ops", "dis_tf.keras_compat",
     "dis_tf.metrics", "dis_tf.losses", "dis_tf.data"},
    # 1: the model and its latent loop.
    {"dis_tf.modeling"},
    # 2: what runs a model: training, evaluation, serving, its quality score
    # and their files.
    {"dis_tf.model_dir", "dis_tf.flags", "dis_tf.callbacks", "dis_tf.training",
     "dis_tf.evaluation", "dis_tf.reports", "dis_tf.selection",
     "dis_tf.tag_cleaning", "dis_tf.visualization", "dis_tf.prediction_io",
     "dis_tf.serving", "dis_tf.segmenter", "dis_tf.quality"},
    # 3: the package's public entry point.
    {"dis_tf"},
    # 4: the research harness, apart from the library.
    {"dis_tf.research"},
]


def _layer(module):
  """The layer of a dotted module name (its longest listed prefix)."""
  parts = module.split(".")
  for n in range(len(parts), 0, -1):
    name = ".".join(parts[:n])
    for index, layer in enumerate(LAYERS):
      if name in layer:
        return index
  raise KeyError(f"{module} is in no layer of tests/test_import_graph.py; "
                 "add it to one.")


def _modules():
  for folder, _, files in os.walk(ROOT):
    for file in sorted(files):
      if file.endswith(".py"):
        path = os.path.join(folder, file)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3]
        name = rel.replace(os.sep, ".")
        yield (name[:-len(".__init__")] if name.endswith(".__init__")
               else name), path


def imports_of(path, name):
  """dis_tf modules imported by the file (absolute and relative)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith("dis_tf"))
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith("dis_tf")):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.add(full if _is_module(full) else node.module)
  return out


def _is_module(dotted):
  path = os.path.join(os.path.dirname(ROOT), *dotted.split("."))
  return os.path.isdir(path) or os.path.exists(path + ".py")


def upward_imports():
  found = []
  for name, path in _modules():
    for target in imports_of(path, name):
      if _layer(target) > _layer(name):
        found.append(f"{name} (layer {_layer(name)}) imports {target} "
                     f"(layer {_layer(target)})")
  return found


def test_every_import_points_down():
  assert upward_imports() == []


def test_the_library_never_imports_the_research_package():
  for name, path in _modules():
    if not name.startswith("dis_tf.research"):
      assert not any(t.startswith("dis_tf.research")
                     for t in imports_of(path, name)), name


def test_an_upward_import_is_caught(tmp_path, monkeypatch):
  # The check itself: modeling importing evaluation (an upward arrow, like
  # the old modeling -> inference -> modeling cycle) is reported.
  fake = tmp_path / "fake.py"
  fake.write_text("from dis_tf import evaluation\n")
  monkeypatch.setattr(
      __import__(__name__), "_modules",
      lambda: iter([("dis_tf.modeling.fake", str(fake))]))
  assert upward_imports() == [
      "dis_tf.modeling.fake (layer 1) imports dis_tf.evaluation (layer 2)"]


@pytest.mark.parametrize("name", ["dis_tf.modeling.latent",
                                  "dis_tf.serving.module"])
def test_known_modules_have_a_layer(name):
  assert _layer(name) in (1, 2)


def _modules_over(limit, root=ROOT):
  """[(path, lines, docstring)] of the .py files under root longer than
  `limit` lines."""
  found = []
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      if not name.endswith(".py"):
        continue
      path = os.path.join(folder, name)
      with open(path, encoding="utf-8") as f:
        text = f.read()
      lines = text.count("\n")
      if lines > limit:
        found.append((path, lines, ast.get_docstring(ast.parse(text)) or ""))
  return found


def test_every_long_module_says_why_in_its_docstring(tmp_path):
  # Issue 24: no module over about 450 lines without a stated reason, a
  # "Size: ... because ..." line in its module docstring.
  missing = [f"{os.path.relpath(path, ROOT)} ({lines} lines)"
             for path, lines, doc in _modules_over(460)
             if not ("Size:" in doc and "because" in doc)]
  assert not missing, missing
  # The check sees a long module without the line.
  (tmp_path / "long.py").write_text('"""No reason."""\n' + "x = 1\n" * 500)
  assert [lines for _, lines, doc in _modules_over(460, str(tmp_path))
          if "Size:" not in doc] == [501]
