"""dis_tf.flags: one typed flag per config field in train, evaluate, export.

The tools run in subprocesses (absl flags are process-global) with
--print_config, which prints the resolved configuration and exits.
"""

import json

import pytest

from dis_tf import config as config_lib
from dis_tf import flags as dis_flags

TOOLS = {
    "train": ("tools/train.py",),
    "evaluate": ("tools/evaluate.py",),
    "export": ("export/export_saved_model.py", "--export_dir=/nonexistent"),
}


def test_parse_step_counts_and_scales():
  assert dis_flags.parse_t_tests("30,0,10,10") == [0, 10, 30]
  assert dis_flags.parse_t_tests(["0", "5"]) == [0, 5]
  with pytest.raises(ValueError, match="--t_test.*'x'"):
    dis_flags.parse_t_tests("0,x")
  with pytest.raises(ValueError, match="--t_test.*negative"):
    dis_flags.parse_t_tests("-1")
  assert dis_flags.parse_scales(["0.75", "1", "1.25"]) == (0.75, 1.0, 1.25)
  with pytest.raises(ValueError, match="--scales"):
    dis_flags.parse_scales("0")


def _get(config, key):
  section, _, name = key.rpartition(".")
  return getattr(getattr(config, section) if section else config, name)


def _other_value(spec, current):
  """A valid value of the field `spec` that differs from `current`."""
  if spec.optional and current is not None:
    return None
  if spec.choices is not None:
    return next(c for c in spec.choices if c != current)
  if spec.type is bool:
    return not current
  if spec.type is int:
    return (64 if current is None else current) + 3
  if spec.type is float:
    return (current or 0.0) + 0.25
  return f"{current}_x" if current else "x"


def _flag(spec, value):
  name = dis_flags.config_flag(spec.key)
  if value is None:
    return f"--{name}=none"
  if spec.type is bool:
    return f"--{name}" if value else f"--no{name}"
  return f"--{name}={value}"


def _print_config(run_tool, tool, *args, check=True):
  proc = run_tool(*TOOLS[tool], "--print_config", *args, check=check)
  return proc if not check else json.loads(proc.stdout)


@pytest.fixture(scope="module")
def saved_config_dir(tmp_path_factory):
  """A model_dir with a config.json (enough for --print_config)."""
  model_dir = str(tmp_path_factory.mktemp("flags") / "run")
  config = config_lib.synthetic()
  config.model_dir = model_dir
  config.save(model_dir)
  return model_dir


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_config_field_is_set_from_the_command_line(
    tool, saved_config_dir, run_tool):
  base = config_lib.synthetic()
  expected = config_lib.synthetic()
  flags = [f"--model_dir={saved_config_dir}"]
  for spec in config_lib.fields():
    if spec.key in ("model_dir", "data.classes"):
      # data.classes names a class file that must exist
      # (tests/test_classes.py).
      continue
    value = _other_value(spec, _get(base, spec.key))
    if tool != "train" and spec.key.startswith("model."):
      # Fixed by training: a trained run accepts only its own value.
      value = _get(base, spec.key)
    flags.append(_flag(spec, value))
    config_lib.apply_overrides(expected, {spec.key: value})
  expected.model_dir = saved_config_dir
  assert "--latent.clip_norm=none" in flags  # None for an Optional field.
  printed = _print_config(run_tool, tool, *flags)
  assert printed == expected.to_dict()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_unknown_key_and_bad_type_are_named(tool, saved_config_dir,
                                            run_tool):
  model_dir = f"--model_dir={saved_config_dir}"
  proc = _print_config(run_tool, tool, model_dir, "--latent.t_tset=3",
                       check=False)
  assert proc.returncode != 0
  assert "Unknown command line flag 'latent.t_tset'" in proc.stderr
  assert "latent.t_test" in proc.stderr  # absl's "Did you mean".
  proc = _print_config(run_tool, tool, model_dir, "--train.batch_size=8.5",
                       check=False)
  assert proc.returncode != 0
  assert "flag --train.batch_size=8.5: invalid literal for int()" in (
      proc.stderr)
  if tool != "train":
    proc = _print_config(run_tool, tool, model_dir, "--model.tiny_width=8",
                         check=False)
    assert proc.returncode != 0
    assert "model.tiny_width=8" in proc.stderr
    assert "cannot change after training" in proc.stderr


@pytest.mark.parametrize("split, expected", [
    ("val", "val"), ("val[100:]", "val_100__"), ("train[:50%]", "train__50__")])
def test_split_file_name_has_no_brackets_or_colons(split, expected):
  assert dis_flags.split_file_name(split) == expected
