"""Stage-1 phase-(c) training step vs stage-2 step with t_train = 0, 10, 30.

  python bench/train_step.py [--repeats=3] [--presets=voc12,synthetic]

voc12: dilated ResNet101 (random weights), 353x353 crops, batch 2 (one
labelled, one weak image); synthetic: the synthetic preset (tiny backbone,
crop 96, its batch size and weak fraction). Each configuration is its own
traced `train_step` (phase / t_train are read at trace time), and the timed
runs are interleaved so other load hits them alike. The latent method is
the model default ("gram").
"""

import argparse
import sys

import common  # Puts the checkout on sys.path.
import latent_ops

import keras
import numpy as np
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import image_ops
from dis_tf.data import pipeline
from dis_tf.modeling.dis_model import build_dis_model

T_TRAINS = (0, 10, 30)


def _batch(model, size, batch_size, num_weak, seed=0):
  rng = np.random.RandomState(seed)
  image = rng.randn(batch_size, size, size, 3).astype(np.float32)
  u1, _ = model.backbone(image[:1])
  mask = rng.randint(0, model.num_classes,
                     (batch_size, size, size)).astype(np.int32)
  tags = (rng.rand(batch_size, model.num_classes) > 0.8).astype(np.float32)
  tags[:, 0] = 1
  is_weak = np.zeros([batch_size], np.float32)
  is_weak[batch_size - num_weak:] = 1
  mask[is_weak > 0] = 255
  return {k: tf.constant(v) for k, v in {
      "image": image, "mask": mask, "tags": tags, "is_weak": is_weak,
      "image_small": image_ops.image_target(image, u1.shape[1:3]).numpy(),
  }.items()}


def _optimizer(config):
  if config.train.optimizer == "adam":
    return keras.optimizers.Adam(1e-5)
  return keras.optimizers.SGD(1e-5, momentum=config.train.momentum)


def bench_preset(name, repeats):
  config = config_lib.PRESETS[name]()
  config.model.weights = None
  if name == "voc12":
    config.train.batch_size = 2
  keras.utils.set_random_seed(0)
  model = build_dis_model(config)
  model.compile(optimizer=_optimizer(config))
  batch_size = config.train.batch_size
  _, num_weak = pipeline.split_batch_sizes(batch_size,
                                           config.data.weak_fraction)
  batch = _batch(model, config.data.crop_size, batch_size, num_weak)
  fns = {}
  model.set_phase("c")
  fns["stage 1, phase (c)"] = tf.function(model.train_step)
  fns["stage 1, phase (c)"](batch)           # traced with phase c
  for t in T_TRAINS:
    model.set_phase("semi")
    model.t_train = t
    key = f"stage 2, t_train={t}"
    fns[key] = tf.function(model.train_step)
    fns[key](batch)                          # traced with this t_train
  times = common.interleaved(
      {k: (lambda f=f: [v.numpy() for v in f(batch).values()])
       for k, f in fns.items()}, repeats=repeats, warmup=1)
  base = times["stage 1, phase (c)"]
  # FLOPs: the traced step (backbone, heads, losses, gradients) plus, for
  # stage 2, t_train latent steps on the weak images (the loop body is a
  # nested function, which `graph_flops` does not enter).
  u1, v1 = model.backbone(batch["image"][-num_weak:])
  weak = (u1, v1, batch["image_small"][-num_weak:], batch["tags"][-num_weak:])
  step_flops = {m: latent_ops.step_flops(
      lambda s, m=m: model.latent(*weak[:3], tags=weak[3], steps=s,
                                  method=m)["probabilities"],
      tf.TensorSpec([], tf.int32)) for m in ("gram", "direct")}
  flops = {k: common.graph_flops(f.get_concrete_function(batch).graph)
           for k, f in fns.items()}
  for t in T_TRAINS:
    flops[f"stage 2, t_train={t}"] += t * step_flops["gram"]
  rows = [[name, k, batch_size, num_weak, v, v / base, flops[k] / 1e9,
           flops[k] / flops["stage 1, phase (c)"], flops[k] / v / 1e9]
          for k, v in times.items()]
  # Profile: the latent loop alone on the weak images' features, per step.
  lat = {m: tf.function(lambda s, m=m: model.latent(
      *weak[:3], tags=weak[3], steps=s, method=m)["probabilities"])
         for m in ("gram", "direct")}
  lt = common.interleaved(
      {(m, t): (lambda m=m, t=t: lat[m](tf.constant(t)).numpy())
       for m in lat for t in (0, 30)}, repeats=repeats + 2, warmup=1)
  profile = []
  for m in ("gram", "direct"):
    seconds = (lt[(m, 30)] - lt[(m, 0)]) / 30
    profile.append([name, m, tuple(u1.shape), 1000 * seconds,
                    30 * seconds / base, step_flops[m] / 1e6,
                    step_flops[m] / seconds / 1e9])
  t_max = f"stage 2, t_train={T_TRAINS[-1]}"
  return (rows, times[t_max] / base, config, profile,
          flops[t_max] / flops["stage 1, phase (c)"])


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--presets", default="voc12,synthetic")
  args = parser.parse_args(argv)
  rows, lines, profile = [], [], []
  for name in args.presets.split(","):
    preset_rows, ratio, config, preset_profile, flop_ratio = bench_preset(
        name, args.repeats)
    rows += preset_rows
    profile += preset_profile
    label = (f"{name} ({config.model.backbone}, crop "
             f"{config.data.crop_size}): stage-2 step t_train=30 / stage-1 "
             f"phase-(c) step")
    lines.append(common.target(label, ratio, 1.5))
    lines.append(f"- {name}: the same ratio in FLOPs: {flop_ratio:.3g} (the "
                 "time ratio if both steps ran at the same FLOP rate)")
  body = [f"Median of {args.repeats} interleaved steps after one warm-up; "
          "random data; latent method: gram. GFLOP per step: TensorFlow's "
          "registered counts over the traced step (`common.graph_flops`), "
          "plus t_train x the FLOPs of one latent step on the weak images "
          "(`latent_ops.step_flops`); the latent loop runs on the weak "
          "images only.", "",
          common.table(["preset", "step", "batch", "weak in batch", "s/step",
                        "/ phase (c)", "GFLOP/step", "FLOPs / phase (c)",
                        "GFLOP/s"], rows), "",
          "Profile: the latent loop alone (training mode, tags given) on the "
          f"weak images' features, median of {args.repeats + 2} interleaved "
          "runs of t=0 and t=30:", "",
          common.table(["preset", "method", "u1 shape", "ms per step",
                        "30 steps / phase-(c) step", "MFLOP per step",
                        "GFLOP/s"], profile), "",
          "Targets (same run):"] + lines
  common.emit("train_step", "Training step (bench/train_step.py)",
              "python bench/train_step.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
