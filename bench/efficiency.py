"""Backbone efficiency: FLOPs / (measured time x measured matmul FLOP/s).

  python bench/efficiency.py [--size=353] [--repeats=3]

FLOPs of the backbone forward pass for one image are counted by the TF
profiler on the traced graph (2 x multiply-adds of every Conv2D / MatMul);
the machine's attainable rate is a large float32 `tf.matmul` measured in the
same run.
"""

import argparse
import sys

import common  # Puts the checkout on sys.path.

import numpy as np
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf.modeling import backbones


def _flops(fn, spec):
  # TensorFlow's internal profiler, needed only for the FLOP count.
  from tensorflow.python.profiler import model_analyzer
  from tensorflow.python.profiler import option_builder
  graph = fn.get_concrete_function(spec).graph
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  return model_analyzer.profile(graph, options=opts).total_float_ops


def _matmul_rate(n=2048, repeats=5):
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  mm = tf.function(lambda: tf.matmul(a, b))
  seconds = common.timed(lambda: mm().numpy(), repeats=repeats, warmup=2)
  return 2.0 * n ** 3 / seconds


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=353)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  rows = []
  rate_before = _matmul_rate()
  for name, size in (("resnet101", args.size), ("tiny", 96)):
    config = config_lib.voc12() if name == "resnet101" else (
        config_lib.synthetic())
    backbone = backbones.build_backbone(
        name, weights=None, tiny_width=config.model.tiny_width)
    fn = tf.function(lambda x: backbone(x, training=False))
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    flops = _flops(fn, spec)
    image = tf.constant(np.random.RandomState(0).randn(1, size, size, 3)
                        .astype(np.float32))
    seconds = common.timed(lambda: fn(image)[0].numpy(),
                           repeats=args.repeats, warmup=1)
    rows.append([name, size, flops / 1e9, seconds, flops / seconds / 1e9])
  rate_after = _matmul_rate()
  rate = max(rate_before, rate_after)
  for row in rows:
    row.append(100.0 * row[4] * 1e9 / rate)
  body = [f"Dense float32 matmul (2048^3) in the same run: "
          f"{rate_before / 1e9:.1f} GFLOP/s before, {rate_after / 1e9:.1f} "
          f"after the backbone timings (the larger is the reference).", "",
          common.table(["backbone", "input", "GFLOPs / image",
                        "forward time (s)", "achieved GFLOP/s",
                        "efficiency (%)"], rows)]
  common.emit("efficiency", "Backbone efficiency (bench/efficiency.py)",
              "python bench/efficiency.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
