"""float32 vs mixed_bfloat16 side by side (issue 29): ResNet101, one run.

  python bench/precision.py [--size=353] [--train_size=225] [--repeats=3]

One dilated-ResNet101 DISModel (random weights, the voc12 preset) is timed
under both values of `model.precision` (`DISModel.set_precision`: the same
float32 weights, the backbone's layers in the other dtype policy; the
latent loop float32 in both). Each timed function is traced under its
precision, and the runs of the two precisions are interleaved round by
round (`common.interleaved`), so each ratio is taken side by side:

* the backbone forward (`DISModel.features`), batch 1 at --size;
* `model.infer` end to end at t = 0 and t = 30 (gram; the Gram kernels
  built per call, as `bench/latent.py` times it), batch 1 at --size;
* a stage-1 phase-(c) and a stage-2 training step (t_train = 10, the
  preset's) at --train_size, batch 2 (one labelled, one weak image), as
  `bench/train_step.py` builds them.

Before the training steps change the weights, the same image's features
and t = 30 labelmaps of both precisions are compared. The CPU's bf16 flags
(amx_bf16, avx512_bf16 in /proc/cpuinfo) are printed: without them
bfloat16 is emulated and slower.
"""

import argparse
import sys

import common  # Puts the checkout on sys.path.
import train_step

import keras
import numpy as np
import tensorflow as tf

from dis_tf import training
from dis_tf.data import pipeline

PRECISIONS = ("float32", "mixed_bfloat16")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags():
  """{flag: present} of the bf16 CPU flags (first processor of cpuinfo)."""
  flags = set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          break
  except OSError:
    pass
  return {flag: flag in flags for flag in BF16_FLAGS}


def _inference_fns(model, image):
  """{(what, precision): fn} traced under each precision."""
  fns = {}
  for precision in PRECISIONS:
    model.set_precision(precision)
    features = tf.function(lambda x: model.features(x)[0])
    infer = tf.function(lambda x, s: model.infer(x, steps=s)["probabilities"])
    features(image)
    for t in (0, 30):
      infer(image, tf.constant(t))
    fns[("backbone forward", precision)] = (
        lambda f=features: f(image).numpy())
    for t in (0, 30):
      fns[(f"end to end t={t}", precision)] = (
          lambda f=infer, t=t: f(image, tf.constant(t)).numpy())
  return fns


def _agreement(model, image):
  """(relative L2 of u1, labelmap agreement at t = 30) bf16 vs float32."""
  out = {}
  for precision in PRECISIONS:
    model.set_precision(precision)
    u1 = model.features(image)[0]
    labels = tf.argmax(model.infer(image, steps=30)["probabilities"], -1)
    out[precision] = (u1, labels)
  (u32, l32), (u16, l16) = out["float32"], out["mixed_bfloat16"]
  rel = float(tf.norm(u16 - u32) / tf.norm(u32))
  return rel, float(np.mean(l32.numpy() == l16.numpy()))


def _train_fns(model, config, size):
  """{(step, precision): fn}: traced train steps of both precisions."""
  batch_size = 2
  _, num_weak = pipeline.split_batch_sizes(batch_size,
                                           config.data.weak_fraction)
  model.set_precision("float32")
  batch = train_step._batch(model, size, batch_size, num_weak)
  model.compile(optimizer=training.make_optimizer(config.train, 1e-6, 100))
  fns = {}
  for precision in PRECISIONS:
    model.set_precision(precision)
    for phase, label in (("c", "stage-1 step (phase c)"),
                         ("semi", "stage-2 step (t_train=10)")):
      model.set_phase(phase)
      fn = tf.function(model.train_step)
      fn(batch)                                   # traced now
      fns[(label, precision)] = (
          lambda f=fn: [v.numpy() for v in f(batch).values()])
  return fns


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=353)
  parser.add_argument("--train_size", type=int, default=225)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  flags = cpu_flags()
  print("CPU bf16 flags:", flags, flush=True)
  keras.utils.set_random_seed(0)
  model, config = common.resnet_model(t_train=10)
  image = tf.constant(np.random.RandomState(0).randn(
      1, args.size, args.size, 3).astype(np.float32))
  rel, agree = _agreement(model, image)
  print(f"u1 relative L2 {rel:.4g}, labelmap agreement {agree:.4g}",
        flush=True)
  times = common.interleaved(_inference_fns(model, image),
                             repeats=args.repeats, warmup=1)
  print("inference timed", flush=True)
  times.update(common.interleaved(_train_fns(model, config, args.train_size),
                                  repeats=args.repeats, warmup=1))
  whats = []
  for what, _ in times:
    if what not in whats:
      whats.append(what)
  rows = []
  for what in whats:
    f32, b16 = times[(what, "float32")], times[(what, "mixed_bfloat16")]
    size = args.train_size if "step" in what else args.size
    batch = 2 if "step" in what else 1
    rows.append([what, f"{size}x{size}", batch, f32, b16, f32 / b16])
  ratio = {row[0]: row[5] for row in rows}
  t_ratio = {p: times[("end to end t=30", p)] / times[("end to end t=0", p)]
             for p in PRECISIONS}
  flag_text = ", ".join(f"{k}: {'yes' if v else 'no'}"
                        for k, v in flags.items())
  body = [
      f"CPU bf16 flags (/proc/cpuinfo): {flag_text}. Dilated ResNet101 "
      "(random weights), latent method gram; median of "
      f"{args.repeats} interleaved runs after one warm-up. The same "
      "weights under both precisions (`DISModel.set_precision`); the "
      "latent loop is float32 in both.", "",
      common.table(["what", "input", "batch", "float32 s", "bf16 s",
                    "float32 / bf16"], rows), "",
      f"Accuracy, same image at {args.size}, before any training step: "
      f"relative L2 difference of u1 (bf16 vs float32) {rel:.3g}; t=30 "
      f"labelmaps (feature resolution) equal on {100 * agree:.2f}% of the "
      "positions.", "",
      "Targets (same run):",
      common.target(f"ResNet101 at {args.size}, t=0 end to end, float32 / "
                    "bf16", ratio["end to end t=0"], 1.8,
                    higher_is_better=True),
      common.target("end to end t=30 / t=0 under float32",
                    t_ratio["float32"], 1.05),
      common.target("end to end t=30 / t=0 under mixed_bfloat16",
                    t_ratio["mixed_bfloat16"], 1.05),
      "- (not measured here: the served latency through the SavedModel, "
      "target >= 1.6x, and mIoU under bf16)",
  ]
  common.emit("precision", "Precision: float32 vs mixed_bfloat16 "
              "(bench/precision.py)", "python bench/precision.py",
              "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
