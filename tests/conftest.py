"""Shared test setup and fixtures.

Setup: quiet TensorFlow, and two logical CPUs so that tf.distribute tests
run a real 2-replica MirroredStrategy on one physical CPU. (The `slow`
marker is declared in pyproject.toml.)

Fixtures:
  tiny_config    factory: the synthetic preset cut down for CPU tests.
  tiny_model     factory: a seeded `DISModel` built from `tiny_config`.
  tiny_run       factory: a model_dir of an untrained tiny model.
  dataset_fn     training batches without files (`training.train`'s
                 `dataset_fn`).
  eval_examples  factory: evaluation examples without files.
  backbone_calls counts the backbone calls of a model.
  prepare_tfds   prepares a builder from a manual dir; `tfds_examples` reads
                 a split back.
  mini_benchmark a generated synthetic benchmark (VOC tree + web_tags
                 folder) with both tfds datasets prepared; built once per
                 run (shared by pytest-xdist workers), read-only.
  trained_run    `tools/train.py --stage=all --deterministic` on the mini
                 benchmark; built once per run (shared by pytest-xdist
                 workers), for tests that only read it.
  run_tool       runs a tool script in a subprocess (absl flags are
                 process-global), as a user runs it; `tool_env` is its
                 environment, for tests that start tools themselves.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
from unittest import mock

# Before TensorFlow is imported (it reads this when it loads).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf import model_dir as model_dir_lib
from dis_tf.data import pipeline
from dis_tf.data import synthetic
from dis_tf.modeling.dis_model import build_dis_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
  del config
  # Two logical CPU devices; must happen before TF initialises (importing
  # dis_tf does not). If it has, this raises: the mirrored-strategy test
  # must run, not turn into a skip.
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


# ---------------------------------------------------------------- skips
# The only skips a run may have: what the machine lacks, not what the
# project forgot to install. Each entry is (name, start of the skip reason).
# Under .ci/run (STRICT_SKIPS_ENV=1) any other skip fails its test.
STRICT_SKIPS_ENV = "DIS_TF_STRICT_SKIPS"
ENVIRONMENT_SKIPS = (
    ("not root", "needs root to mount"),
    ("no strace", "strace unavailable"),
    ("no clear_refs", "needs /proc/self/clear_refs"),
)


def allowed_skip(reason):
  """The allow-list name of a skip `reason`, or None if it is not allowed."""
  reason = reason.removeprefix("Skipped: ")
  for name, prefix in ENVIRONMENT_SKIPS:
    if reason.startswith(prefix):
      return name
  return None


def _skip_reason(report):
  longrepr = report.longrepr
  if isinstance(longrepr, tuple) and len(longrepr) == 3:
    return str(longrepr[2])
  return str(longrepr)


def _fail_unlisted_skip(report):
  if (os.environ.get(STRICT_SKIPS_ENV) != "1" or not report.skipped
      or hasattr(report, "wasxfail")):
    return
  reason = _skip_reason(report)
  if allowed_skip(reason) is None:
    report.outcome = "failed"
    report.longrepr = (
        f"skip not on the allow-list (tests/conftest.py ENVIRONMENT_SKIPS) "
        f"while {STRICT_SKIPS_ENV}=1: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  del item, call
  outcome = yield
  _fail_unlisted_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
  del collector
  outcome = yield
  _fail_unlisted_skip(outcome.get_result())


def _tiny_config(model_dir=None, width=8, crop_size=32, steps=4, **latent):
  """The synthetic preset for CPU tests: tiny backbone `width`, crops of
  `crop_size`, batch 2, `steps` steps per phase in epochs of 2, t_train 2;
  `latent` overrides LatentConfig fields (e.g. method="direct")."""
  config = config_lib.synthetic()
  config.model_dir = None if model_dir is None else str(model_dir)
  config.model.tiny_width = width
  config.data.crop_size = crop_size
  # The canvas is the crop: the preset's 128 canvas is for its 96-128 px
  # images, and would make every test evaluation several times slower.
  config.data.eval_crop_size = None
  config.train.batch_size = 2
  for key in ("phase_a_steps", "phase_b_steps", "phase_c_steps",
              "semi_steps"):
    setattr(config.train, key, steps)
  config.train.steps_per_epoch = 2
  config.latent.t_train = 2
  # The preset's val[:100] / val[100:] need 101+ val images; the mini
  # benchmark has 4: select on the first 2, report on all of val.
  config.data.eval_split, config.data.select_split = "val", "val[:2]"
  return config_lib.apply_overrides(
      config, {f"latent.{k}": v for k, v in latent.items()})


@pytest.fixture(scope="session")
def tiny_config():
  """`tiny_config(model_dir=None, width=8, crop_size=32, steps=4, **latent)`."""
  return _tiny_config


@pytest.fixture(scope="session")
def tiny_model():
  """`tiny_model(seed=0, width=16, crop_size=32, precision="float32",
  **latent)`: a `DISModel` (phase "a") built after
  `keras.utils.set_random_seed(seed)`, its backbone in `precision`."""
  def make(seed=0, width=16, crop_size=32, precision="float32", **latent):
    keras.utils.set_random_seed(seed)
    config = _tiny_config(width=width, crop_size=crop_size, **latent)
    config.model.precision = precision
    return build_dis_model(config)
  return make


@pytest.fixture(scope="session")
def tiny_run():
  """`tiny_run(run_dir, seed=0, width=8, crop_size=32, **latent)` ->
  (config, model): writes a model_dir (config.json, model.keras) of an
  untrained model of `tiny_config(run_dir, width, crop_size, **latent)`."""

  def make(run_dir, seed=0, width=8, crop_size=32, **latent):
    config = _tiny_config(run_dir, width=width, crop_size=crop_size,
                          **latent)
    keras.utils.set_random_seed(seed)
    model = build_dis_model(config)
    config.save(config.model_dir)
    model_dir_lib.save_model(model, config.model_dir)
    return config, model
  return make


@pytest.fixture
def mini_run(tiny_run, mini_benchmark):
  """`mini_run(run_dir, phases=("c",), num_select=2)` -> (config, model): a
  `tiny_run` on the mini benchmark (selection split val[:num_select],
  reported split the rest) whose untrained weights stand in for the
  finished `phases` (`checkpoints/phase_<p>.weights.h5`), as the studies
  read a finished run."""

  def make(run_dir, phases=("c",), num_select=2):
    config, model = tiny_run(run_dir, width=8)
    config.data.voc_dir = mini_benchmark["voc_dir"]
    config.data.weak_dir = mini_benchmark["weak_dir"]
    config.data.data_dir = mini_benchmark["data_dir"]
    config.data.select_split = f"val[:{num_select}]"
    config.data.eval_split = f"val[{num_select}:]"
    config.save(run_dir)
    for phase in phases:
      path = model_dir_lib.phase_weights_path(run_dir, phase)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      model.save_weights(path)
    return config, model
  return make


@pytest.fixture(scope="session")
def backbone_calls():
  """`with backbone_calls(model) as calls:` records each call of
  `model.backbone` in the list `calls` (the one-backbone-pass checks)."""

  @contextlib.contextmanager
  def count(model):
    calls = []
    original = model.backbone.call

    def counting_call(*args, **kwargs):
      calls.append(1)
      return original(*args, **kwargs)

    with mock.patch.object(model.backbone, "call", counting_call):
      yield calls
  return count


def _dataset_fn(config, stage):
  rng = np.random.RandomState(0)
  size, batch = config.data.crop_size, config.train.batch_size
  image = rng.randn(batch, size, size, 3).astype(np.float32)
  f = image_ops.feature_size(size)
  element = {
      "image": image,
      "image_small": image_ops.image_target(image, (f, f)).numpy(),
      "mask": rng.randint(0, 21, (batch, size, size)).astype(np.int32),
      "tags": np.ones((batch, 21), np.float32),
      "is_weak": np.array([stage == "semi", False], np.float32),
  }
  return tf.data.Dataset.from_tensors(element).repeat()


@pytest.fixture(scope="session")
def dataset_fn():
  """`dataset_fn(config, stage)`: one random batch of batch size 2, repeated
  (the second example is weak in stage "semi")."""
  return _dataset_fn


def _eval_examples(sizes=((64, 64), (56, 72), (64, 48)), seed=0):
  """Batch-1 dicts as the eval pipeline emits them (images of varied size)."""
  rng = np.random.RandomState(seed)
  examples = []
  for i, (h, w) in enumerate(sizes):
    mask = rng.randint(0, 4, size=(1, h, w)).astype(np.int32)
    mask[:, :3] = 255  # An ignore band, as in VOC.
    tags = np.zeros((1, 21), np.float32)
    tags[0, 0] = 1.0
    tags[0, np.unique(mask[mask != 255])] = 1.0
    examples.append({
        "image": tf.constant(rng.randn(1, h, w, 3).astype(np.float32)),
        "mask": tf.constant(mask),
        "tags": tf.constant(tags),
        "file_name": tf.constant([f"img_{i}.jpg"]),
    })
  return examples



@pytest.fixture(scope="session")
def eval_examples():
  """`eval_examples(sizes=((64, 64), (56, 72), (64, 48)), seed=0)`: batch-1
  dicts as the eval pipeline emits them ("image", "mask", "tags",
  "file_name"), random images of the given sizes."""
  return _eval_examples


@pytest.fixture(scope="session")
def prepare_tfds():
  """`prepare_tfds(builder_cls, config_cls, manual_dir, data_dir,
  skip=False)`: a dis_tf tfds builder prepared the tfds way (default config,
  the folder as the download config's manual_dir; `skip`: a config with
  skip_bad_files)."""

  def prepare(builder_cls, config_cls, manual_dir, data_dir, skip=False):
    builder = builder_cls(
        data_dir=str(data_dir),
        config=config_cls(name="skip", skip_bad_files=True) if skip else None)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
  return prepare


@pytest.fixture(scope="session")
def tfds_examples():
  """`tfds_examples(builder, split="train")`: {file name: NumPy example}."""
  return lambda builder, split="train": {
      ex["file_name"].decode(): ex
      for ex in tfds.as_numpy(builder.as_dataset(split=split))}


MINI_BENCHMARK = dict(num_train=8, num_val=4, num_weak=8, num_tags_only=2,
                      image_size=48)


def _shared(tmp_path_factory, name, build):
  """Builds a read-only session resource once per test run.

  Under pytest-xdist every worker is its own session, so a plain session
  fixture would be built once per worker. The first worker builds it in the
  run's shared base directory (the pattern of the pytest-xdist docs) while
  holding a lock; the others wait and read its JSON summary.

  Args:
    tmp_path_factory: pytest's session `tmp_path_factory`.
    name: folder name of the resource.
    build: `build(directory) -> JSON-able summary`; `directory` exists.

  Returns:
    The summary.
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  directory = base / name
  done = base / f"{name}.json"
  with open(base / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      directory.mkdir(exist_ok=True)
      summary = build(str(directory))
      done.write_text(json.dumps(summary))
  return json.loads(done.read_text())


@pytest.fixture(scope="session")
def mini_benchmark(tmp_path_factory):
  """The synthetic benchmark at `MINI_BENCHMARK` sizes, tfds prepared.

  Returns:
    {"root", "voc_dir", "weak_dir", "data_dir", "flags" (--voc_dir,
    --weak_dir, --data_dir)} plus the `MINI_BENCHMARK` counts. Tests must
    not change it.
  """
  def build(root):
    summary = synthetic.generate_benchmark(root, **MINI_BENCHMARK)
    paths = {"root": root, "voc_dir": summary["voc_dir"],
             "weak_dir": summary["weak_dir"],
             "data_dir": os.path.join(root, "tfds")}
    config = config_lib.resolve_config("synthetic", {
        "data.voc_dir": paths["voc_dir"], "data.weak_dir": paths["weak_dir"],
        "data.data_dir": paths["data_dir"]})
    pipeline.prepare_datasets(config)
    flags = [f"--voc_dir={paths['voc_dir']}",
             f"--weak_dir={paths['weak_dir']}",
             f"--data_dir={paths['data_dir']}"]
    return dict(MINI_BENCHMARK, flags=flags, **paths)
  return _shared(tmp_path_factory, "mini_benchmark", build)


def _tool_env(**extra):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="")
  env.update({k: str(v) for k, v in extra.items()})
  return env


@pytest.fixture(scope="session")
def tool_env():
  """`tool_env(**extra)`: the environment of a tool subprocess (this
  checkout's dis_tf, quiet TensorFlow, CPU only, plus `extra`)."""
  return _tool_env


def _run_tool(tool, *args, check=True, timeout=900):
  proc = subprocess.run([sys.executable, tool, *map(str, args)], cwd=REPO,
                        env=_tool_env(), capture_output=True, text=True,
                        timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"{tool} {args} failed:\n{proc.stderr[-3000:]}")
  return proc


@pytest.fixture(scope="session")
def run_tool():
  """`run_tool("tools/x.py", *args, check=True)` -> CompletedProcess (text),
  run from the repository root."""
  return _run_tool


def _source_hash():
  h = hashlib.sha1()
  for top in ("dis_tf", "tools"):
    for dirpath, _, files in sorted(os.walk(os.path.join(REPO, top))):
      for name in sorted(files):
        if name.endswith((".py", ".txt")):
          with open(os.path.join(dirpath, name), "rb") as f:
            h.update(name.encode() + f.read())
  return h.hexdigest()


@pytest.fixture(scope="session")
def source_hash():
  """`source_hash()`: hash of the code tool subprocesses run (dis_tf/ and
  tools/), to tell a concurrent edit of a shared checkout from a bug."""
  return _source_hash


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mini_benchmark):
  """A finished `tools/train.py --stage=all --deterministic` run of 4 steps
  per phase on the mini benchmark (the reliability tests' reference run).

  Returns:
    {"model_dir", "flags" (its command line, without --model_dir),
    "source" (`source_hash()` when it started)}. Tests must not change it.
  """
  flags = mini_benchmark["flags"] + [
      "--preset=synthetic", "--stage=all", "--backbone=tiny",
      "--crop_size=48", "--data.eval_crop_size=48", "--batch_size=2",
      "--phase_a_steps=4",
      "--phase_b_steps=4", "--phase_c_steps=4", "--semi_steps=4",
      "--steps_per_epoch=2", "--t_train=2", "--tag_weight=0.5",
      "--deterministic"]

  def build(directory):
    model_dir = os.path.join(directory, "run")
    source = _source_hash()
    _run_tool("tools/train.py", f"--model_dir={model_dir}", *flags)
    return {"model_dir": model_dir, "flags": flags, "source": source}
  return _shared(tmp_path_factory, "trained_run", build)


def _tensorboard_events(log_dir):
  events = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(log_dir,
                                                   "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        events.setdefault(value.tag, []).append({
            "step": event.step, "value": tf.make_ndarray(value.tensor),
            "description": value.metadata.summary_description})
  return events


@pytest.fixture(scope="session")
def tensorboard_events():
  """`tensorboard_events(log_dir)` -> {tag: [{"step", "value" (the summary
  tensor as an array: an image summary's is [width, height, PNG...]),
  "description"}]}, read back from the event files of one run directory."""
  return _tensorboard_events


class CrashAt(keras.callbacks.Callback):
  """Raises at the start of epoch `epoch` of `phase` (a killed run)."""

  def __init__(self, phase, epoch):
    super().__init__()
    self.phase, self.epoch = phase, epoch

  def on_epoch_begin(self, epoch, logs=None):
    if self.model.phase == self.phase and epoch == self.epoch:
      raise KeyboardInterrupt("simulated kill")
