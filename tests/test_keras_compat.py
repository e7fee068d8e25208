"""dis_tf.keras_compat: the private Keras API it relies on is unchanged."""

import ast
import os

import keras

from dis_tf import keras_compat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_keras_internals_are_those_the_workarounds_were_written_for():
  changed = keras_compat.changed_internals()
  assert not changed, (
      f"dis_tf/keras_compat.py was written for keras "
      f"{keras_compat.KERAS_VERSION}; keras {keras.__version__} changed the "
      "internals its multi-worker workarounds rely on:\n  "
      + "\n  ".join(changed) + "\nCheck whether the bugs it works around "
      "are fixed (tests/test_reliability_distributed.py without the "
      "workaround), then update or remove the workaround and the hashes in "
      "keras_compat.INTERNALS.")


def test_private_keras_attributes_are_used_only_in_keras_compat():
  """No `x._name` on Keras objects outside keras_compat.py.

  Heuristic: attribute accesses with a leading underscore on `model`,
  `self.model`, `optimizer` or a `keras.` path, and `keras.src` imports,
  in dis_tf/.
  """
  offenders = []
  for dirpath, _, files in os.walk(os.path.join(REPO, "dis_tf")):
    for name in files:
      path = os.path.join(dirpath, name)
      if not name.endswith(".py") or name == "keras_compat.py":
        continue
      with open(path) as f:
        source = f.read()
      if "keras.src" in source:
        offenders.append(f"{os.path.relpath(path, REPO)} imports keras.src")
      tree = ast.parse(source)
      for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__")):
          owner = ast.unparse(node.value)
          if (owner in ("model", "self.model", "optimizer")
              or owner.startswith("keras.")):
            offenders.append(f"{os.path.relpath(path, REPO)}:{node.lineno} "
                             f"{owner}.{node.attr}")
  assert not offenders, offenders
