"""tf.data throughput vs what a training step consumes, both presets.

  python bench/input_pipeline.py [--batches=20] [--repeats=3]

Data: `dis_tf.data.synthetic.generate_benchmark` into a temporary folder
(voc12: 400-pixel images so the 353 crop is a real crop), prepared with
tfds. "Pipeline" is examples/s of `pipeline.train_dataset(config, "semi")`
iterated alone (after warm-up); "training step" is examples/s of the stage-2
`train_step` (preset t_train, gram latent path) on batches of that pipeline;
"re-prepare s" is the wall time of `prepare_datasets` on the already
prepared data_dir (it must not rebuild; the unit test checks that without
timing it).
voc12 uses batch 2 (as bench/train_step.py) with random-weight ResNet101.
"""

import argparse
import os
import sys
import tempfile
import time

import common  # Puts the checkout on sys.path.

import keras
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf.data import pipeline
from dis_tf.data import synthetic
from dis_tf.modeling.dis_model import build_dis_model


def _config(name, root):
  config = config_lib.PRESETS[name]()
  config.model.weights = None
  image_size = 400 if name == "voc12" else 128
  data = os.path.join(root, name)
  synthetic.generate_benchmark(data, num_train=64, num_val=8, num_weak=64,
                               num_tags_only=16, image_size=image_size)
  config.data.data_dir = os.path.join(root, name + "_tfds")
  config.data.voc_dir = data
  config.data.weak_dir = os.path.join(data, "web_tags")
  if name == "voc12":
    config.train.batch_size = 2
  return config


def bench(name, root, batches, repeats):
  config = _config(name, root)
  pipeline.prepare_datasets(config)
  # An already prepared data_dir: prepare_datasets must only read the
  # dataset info (tests/test_data_pipeline.py checks that it writes and
  # regenerates nothing; how long it takes is measured here).
  start = time.perf_counter()
  pipeline.prepare_datasets(config)
  reprepare = time.perf_counter() - start
  it = iter(pipeline.train_dataset(config, "semi"))
  for _ in range(5):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)["image"].numpy()
  pipe_rate = batches * config.train.batch_size / (
      time.perf_counter() - start)
  keras.utils.set_random_seed(0)
  model = build_dis_model(config)
  model.compile(optimizer=keras.optimizers.SGD(1e-5))
  model.set_phase("semi")
  model.t_train = config.latent.t_train
  step = tf.function(model.train_step)
  seconds = common.timed(
      lambda: [v.numpy() for v in step(next(it)).values()],
      repeats=repeats, warmup=1)
  train_rate = config.train.batch_size / seconds
  return [name, config.model.backbone, config.data.crop_size,
          config.train.batch_size, config.latent.t_train, pipe_rate,
          train_rate, pipe_rate / train_rate, reprepare]


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name in ("synthetic", "voc12"):
      rows.append(bench(name, root, args.batches, args.repeats))
  lines = [common.target(f"{r[0]}: pipeline / training-step examples/s", r[7],
                         3, higher_is_better=True) for r in rows]
  body = [f"Pipeline: {args.batches} batches after 5 warm-up batches; "
          f"training step: median of {args.repeats} stage-2 steps "
          "(fed from the pipeline, so it includes waiting for it).", "",
          common.table(["preset", "backbone", "crop", "batch", "t_train",
                        "pipeline ex/s", "training step ex/s",
                        "pipeline / step", "re-prepare s"], rows), "",
          "Targets (same run):"] + lines
  common.emit("input_pipeline", "Input pipeline (bench/input_pipeline.py)",
              "python bench/input_pipeline.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
