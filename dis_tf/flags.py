"""Command-line flags shared by the tools (like Model Garden's common/flags.py).

Every field of `dis_tf.config.ExperimentConfig` is one typed absl flag named
by its dotted key, generated from the dataclasses:

  --latent.t_test=10  --data.skip_bad_files  --train.weight_decay=1e-4
  --model.weights=none  --latent.clip_norm=none  (None for Optional fields)

absl checks each value against the field's type (integer, number, boolean,
one of a field's choices) and refuses an unknown key, naming the flag. The
four paths every tool takes have short names: `--model_dir`,
`--data_dir` (data.data_dir), `--voc_dir` (data.voc_dir) and `--weak_dir`
(data.weak_dir). A tool may add aliases (absl `DEFINE_alias`) so that
established short flags keep working, e.g. `--t_train` for
`--latent.t_train`. `--print_config` prints the resolved configuration and
exits.

Also here: the step-count and scale list flags (`--t_test=0,10,30`,
`--scales=0.75,1,1.25`) and their parsers, so that every tool reports a bad
value the same way.

This module, `dis_tf.config` and `dis_tf.model_dir`'s config functions do
not import TensorFlow. The tools import the modules that do (training,
evaluation, the pipeline, export) inside `main`, once the flags have parsed
and the run's config has resolved: a mistyped flag, a missing --model_dir or
`--helpfull` then answers in about 0.3 s instead of after TensorFlow's
import (about 4 s of CPU). `tests/test_tools_import_light.py` holds them to
it.
"""

import json
import os
import re
import sys

from absl import flags
import numpy as np

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib

FLAGS = flags.FLAGS

# Config fields that every tool takes, under Model Garden-style short names.
SHORT_NAMES = {
    "model_dir": "model_dir",
    "data.data_dir": "data_dir",
    "data.voc_dir": "voc_dir",
    "data.weak_dir": "weak_dir",
}


def config_flag(key):
  """The flag name of the config field `key` ("latent.t_test" ->
  "latent.t_test", "data.voc_dir" -> "voc_dir")."""
  return SHORT_NAMES.get(key, key)


class _OptionalParser(flags.ArgumentParser):
  """Parses "none" (any case) as None, anything else with `inner`."""

  def __init__(self, inner):
    super().__init__()
    self.inner = inner

  def parse(self, argument):
    if argument is None or (isinstance(argument, str)
                            and argument.lower() == "none"):
      return None
    return self.inner.parse(argument)

  def flag_type(self):
    return f"{self.inner.flag_type()} or none"


def _help(spec):
  if config_flag(spec.key) == spec.key:
    return spec.doc or spec.key
  return f"{spec.doc} (config {spec.key})"


def _define_field(spec):
  name, help_text = config_flag(spec.key), _help(spec)
  if spec.type is bool:
    return flags.DEFINE_boolean(name, None, help_text)
  if spec.choices is not None:
    return flags.DEFINE_enum(name, None, list(spec.choices), help_text)
  parser = {int: flags.IntegerParser, float: flags.FloatParser,
            str: flags.ArgumentParser}[spec.type]()
  if spec.optional:
    parser = _OptionalParser(parser)
  return flags.DEFINE(parser, name, None, help_text)


def define_config_flags(aliases=None, exclude=()):
  """Defines one flag per config field, the aliases and --print_config.

  Call at module level in a tool, then `flags.adopt_module_key_flags(
  dis_tf.flags)` so that `--help` lists them. Every flag defaults to None:
  not given, the preset's (training) or config.json's (a trained run's)
  value stands.

  Args:
    aliases: optional {alias flag: config key}, e.g. {"t_train":
      "latent.t_train"}: short names a tool keeps for its users.
    exclude: config keys this tool sets itself (no flag is defined).
  """
  for spec in config_lib.fields():
    if spec.key not in exclude:
      _define_field(spec)
  for alias, key in (aliases or {}).items():
    flags.DEFINE_alias(alias, config_flag(key))
  flags.DEFINE_boolean("print_config", False,
                       "Print the resolved configuration (JSON) and exit.")


def config_overrides():
  """{config key: value} of the config flags given on the command line."""
  overrides = {}
  for spec in config_lib.fields():
    name = config_flag(spec.key)
    if name in FLAGS and FLAGS[name].present:
      overrides[spec.key] = FLAGS[name].value
  return overrides


def print_config_and_exit(config):
  """With --print_config: prints `config` as JSON and returns True."""
  if not FLAGS.print_config:
    return False
  print(json.dumps(config.to_dict(), indent=2, sort_keys=True))
  return True


def run_config(argv):
  """The start of every tool that reads a training run (--model_dir).

  Args:
    argv: the tool's positional arguments (`main`'s argv; none allowed).

  Returns:
    The run's config.json with the command line's overrides, or None when
    --print_config printed it (the tool then returns).

  Raises:
    UserError: positional arguments, or no --model_dir.
  """
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.model_dir:
    raise errors.UserError("--model_dir is required: the folder of a "
                           "training run (tools/train.py --model_dir).")
  config = model_dir_lib.load_config(FLAGS.model_dir, config_overrides())
  return None if print_config_and_exit(config) else config


def load_run(argv):
  """`run_config`, then the run's model with the config's settings.

  Returns:
    (config, model, the evaluated split, the t_test list: --t_test or the
    run's latent.t_test), or None when --print_config printed the config.
  """
  config = run_config(argv)
  if config is None:
    return None
  model = model_dir_lib.load_trained_model(FLAGS.model_dir, config)
  t_tests = FLAGS.t_test or [config.latent.t_test]
  return config, model, config.data.eval_split, t_tests


# ------------------------------------------------------- step counts, scales
def _items(values):
  if isinstance(values, (str, int, float)):
    values = [values]
  items = []
  for value in values:
    items.extend(str(value).split(","))
  return [item.strip() for item in items if item.strip()]


def parse_t_tests(values, flag_name="--t_test"):
  """Parses step counts: "0,10,30", ["0", "10"] or ints -> sorted unique ints.

  Args:
    values: a comma-separated string, or a list of strings / ints.
    flag_name: named in errors.

  Returns:
    Sorted list of unique non-negative ints.

  Raises:
    ValueError: empty, not an integer, or negative.
  """
  result = set()
  for item in _items(values):
    try:
      number = int(item)
    except ValueError:
      raise errors.UserError(
          f"{flag_name}: {item!r} is not an integer.") from None
    if number < 0:
      raise errors.UserError(f"{flag_name}: {number} is negative; step counts "
                             "must be >= 0.")
    result.add(number)
  if not result:
    raise errors.UserError(f"{flag_name}: no step count given (e.g. 0,10,30).")
  return sorted(result)


def split_file_name(split):
  """A split name safe in file names: "val[100:]" -> "val_100__"."""
  return re.sub(r"[^A-Za-z0-9_.-]", "_", split)


def parse_scales(values, flag_name="--scales"):
  """Parses test scales: "0.75,1,1.25" or a list -> tuple of positive floats.

  Args:
    values: a comma-separated string, or a list of strings / floats.
    flag_name: named in errors.

  Returns:
    Tuple of floats, in the given order, duplicates removed.

  Raises:
    ValueError: empty, not a number, or not positive.
  """
  result = []
  for item in _items(values):
    try:
      scale = float(item)
    except ValueError:
      raise errors.UserError(
          f"{flag_name}: {item!r} is not a number.") from None
    if not np.isfinite(scale) or scale <= 0:
      raise errors.UserError(f"{flag_name}: {item} must be a positive number.")
    if scale not in result:
      result.append(scale)
  if not result:
    raise errors.UserError(f"{flag_name}: no scale given (e.g. 0.75,1,1.25).")
  return tuple(result)


class _ListParser(flags.ArgumentParser):
  """A comma-separated list, parsed and checked by `parse(values, name)`."""

  def __init__(self, parse, name, kind):
    super().__init__()
    self._parse, self._name, self._kind = parse, name, kind

  def parse(self, argument):
    return self._parse(argument, f"--{self._name}")

  def flag_type(self):
    return f"comma-separated {self._kind}"


def define_t_test(default, help_text, name="t_test"):
  """Defines a --t_test-style flag: a list of latent step counts."""
  return flags.DEFINE(_ListParser(parse_t_tests, name, "step counts"), name,
                      default, help_text,
                      serializer=flags.CsvListSerializer(","))


def define_scales(default, help_text, name="scales"):
  """Defines a --scales-style flag: a list of positive test scales."""
  return flags.DEFINE(_ListParser(parse_scales, name, "scales"), name,
                      default, help_text,
                      serializer=flags.CsvListSerializer(","))


def define_study_page_flags(tool):
  """Defines --data_root, --output and --from_json, the flags of the tools
  that score finished runs into a results page (`tools/pseudo_label_study.py`,
  `tools/quality_study.py`); `tool` names the tool in their help."""
  flags.DEFINE_string("data_root", None, "The synthetic benchmark, if it "
                      "moved since the runs (default: the runs' config.json "
                      "paths).")
  flags.DEFINE_string("output", None, "Markdown page to write.")
  flags.DEFINE_string("from_json", None, "Re-render the page from this JSON "
                      f"of an earlier {tool} run (no scoring).")


def define_study_run_flags(tool):
  """--model_dirs and --seeds (the trained runs a study scores, one seed
  each), then `define_study_page_flags(tool)`."""
  flags.DEFINE_list("model_dirs", None, "The trained runs, one per seed.")
  flags.DEFINE_list("seeds", None, "The runs' seeds, in the same order "
                    "(default: 0, 1, ...).")
  define_study_page_flags(tool)


def study_run_args():
  """(the page's command, the checked seeds or None with --from_json) of a
  tool that defined `define_study_run_flags`."""
  command = study_page_command()
  if flags.FLAGS.from_json:
    return command, None
  return command, study_seeds(flags.FLAGS.model_dirs, flags.FLAGS.seeds)


def study_page_command():
  """The command line a study page records; --output must be given."""
  if not flags.FLAGS.output:
    raise errors.UserError("--output is required.")
  return "python " + " ".join(sys.argv)


def study_page(command, page, run):
  """The end of a study tool's main: the result (re-read from --from_json,
  else `run(data_overrides)`, the --data_root paths or None) written to
  --output as a page and returned.

  Args:
    command: `study_page_command()`.
    page: a module with `load(path)` -> (result, command) and
      `write(result, output, command)` -> page text.
    run: scores the runs; called with the data overrides of --data_root.
  """
  if flags.FLAGS.from_json:
    result, command = page.load(flags.FLAGS.from_json)
  else:
    from dis_tf.data import synthetic  # pylint: disable=g-import-not-at-top
    root = flags.FLAGS.data_root
    result = run(synthetic.config_overrides(root) if root else None)
  return page.write(result, flags.FLAGS.output, command)


def study_seeds(model_dirs, seeds):
  """The seeds of a study's --model_dirs (default 0, 1, ...), after checking
  that each run is a directory and that there is one seed per run."""
  if not model_dirs:
    raise errors.UserError("--model_dirs is required (or --from_json).")
  seeds = seeds or [str(i) for i in range(len(model_dirs))]
  for model_dir in model_dirs:
    if not os.path.isdir(model_dir):
      raise errors.MissingFileError(f"--model_dirs: {model_dir} is not a "
                                    "directory.")
  if len(seeds) != len(model_dirs):
    raise errors.UserError(
        f"--seeds has {len(seeds)} values for {len(model_dirs)} "
        "--model_dirs.")
  return seeds


def check_model_source(model_dir, saved_model, images):
  """The flags that say what segments which images (`tools/predict.py`,
  `tools/rank_unlabelled.py`): one model source, and some images."""
  if bool(model_dir) == bool(saved_model):
    raise errors.UserError(
        "give exactly one of --model_dir (a training run) or --saved_model "
        "(an exported version directory).")
  if not images:
    raise errors.UserError("--images is required (files, folders or glob "
                           "patterns, comma-separated).")
