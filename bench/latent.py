"""Latent inference cost: direct vs Gram, ResNet101 at 353x353, batch 1.

  python bench/latent.py [--size=353] [--repeats=3]

Times `model.infer` (backbone + t latent steps + refinement) end to end for
t = 0, 10, 30 with both methods (runs interleaved so other load hits all
alike), the latent loop alone on fixed (u1, v1), a per-step breakdown of
the Gram step, and the peak resident memory of a fresh process running
t = 0 or t = 30. Random weights: the cost does not depend on them.
"""

import argparse
import sys

import common  # Puts the checkout on sys.path.
import latent_ops

import numpy as np
import tensorflow as tf

from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling import gram as gram_lib


def _setup(size):
  model, _ = common.resnet_model()
  image = tf.constant(
      np.random.RandomState(0).randn(1, size, size, 3).astype(np.float32))
  return model, image


def _status_mb(field):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return float(line.split()[1]) / 1024.0
  raise RuntimeError(field)


def memory_probe(method, steps, size):
  """Peak RSS (MB) while running t steps, in a fresh process.

  The traced function is run once first (tracing, weight copies); then the
  kernel's peak-RSS counter is reset (/proc/self/clear_refs, "5") and the
  peak of the next runs is read from VmHWM, so the model build does not
  mask the inference peak.
  """
  model, image = _setup(size)
  fn = tf.function(lambda x, s: model.infer(x, steps=s, method=method)[
      "probabilities"])
  fn(image, tf.constant(steps)).numpy()
  base = _status_mb("VmRSS")
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  for _ in range(2):
    fn(image, tf.constant(steps)).numpy()
  print(f"{_status_mb('VmHWM'):.1f} {base:.1f}")


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--size", type=int, default=353)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--memory_probe", nargs=2, default=None)
  args = parser.parse_args(argv)
  if args.memory_probe:
    memory_probe(args.memory_probe[0], int(args.memory_probe[1]), args.size)
    return
  model, image = _setup(args.size)
  counts = (0, 10, 30)
  e2e = {m: tf.function(lambda x, s, m=m: model.infer(x, steps=s, method=m)[
      "probabilities"]) for m in ("direct", "gram")}
  fns = {(m, t): (lambda m=m, t=t: e2e[m](image, tf.constant(t)).numpy())
         for m in ("gram", "direct") for t in counts}
  stats = common.interleaved_stats(fns, repeats=args.repeats)
  times = {k: v[0] for k, v in stats.items()}
  runs = {k: v[2] for k, v in stats.items()}

  def paired(m):
    """Median over rounds of t=30 / t=0 timed back to back in one round."""
    return float(np.median([a / b for a, b in zip(runs[(m, 30)],
                                                  runs[(m, 0)])]))

  u1, v1 = model.backbone(image)
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  lat = {m: tf.function(lambda s, m=m: model.latent(
      u1, v1, target, steps=s, method=m)["probabilities"])
         for m in ("direct", "gram")}
  lat_times = common.interleaved(
      {(m, t): (lambda m=m, t=t: lat[m](tf.constant(t)).numpy())
       for m in ("gram", "direct") for t in (0, 30)},
      repeats=args.repeats + 2)
  per_step = {m: (lat_times[(m, 30)] - lat_times[(m, 0)]) / 30
              for m in ("direct", "gram")}

  rows = []
  for m in ("direct", "gram"):
    t0, t10, t30 = (times[(m, t)] for t in counts)
    rows.append([m, t0, t10, t30, t30 / t0,
                 paired(m), 1000 * (t30 - t0) / 30,
                 1000 * per_step[m]])
  headers = ["method", "t=0 (s)", "t=10 (s)", "t=30 (s)",
             "t=30 / t=0 (medians)", "t=30 / t=0 (median of per-round ratios)",
             "per step, end to end (ms)", "per step, latent loop alone (ms)"]
  body = [f"ResNet101 (dilated, random weights), {args.size}x{args.size}, "
          f"batch 1, u1 {tuple(u1.shape)}; median of {args.repeats} "
          "interleaved runs (latent alone: "
          f"{args.repeats + 2}); the per-round ratio pairs runs taken seconds "
          "apart, so slow load drifts from other jobs cancel.", "",
          common.table(headers, rows), ""]

  # Breakdown of one Gram step (the "profile"): subnet-2 value+gradient,
  # A A^T, and the once-per-call operator build.
  u3 = model.subnet1(u1, v1)
  v3 = model.subnet3(u1, v1)
  op = gram_lib.GramOperator.from_heads(model)
  gu, gv = tf.random.normal(u3.shape), tf.random.normal(v3.shape)

  @tf.function
  def value_and_grad(u3):
    with tf.GradientTape() as tape:
      tape.watch(u3)
      loss = tf.reduce_sum(latent_lib.objective_from_logits(
          model, u3, v3, target))
    return tape.gradient(loss, u3)

  # As the loop applies it: the shape-dependent part built once.
  apply = tf.function(op.applier(gu.shape))
  build = tf.function(lambda: gram_lib.GramOperator.from_heads(
      model).fields())
  direct_grad = tf.function(lambda u1, v1: _direct_grad(model, u1, v1,
                                                        target))
  parts = common.interleaved({
      "subnet-2 objective + gradient wrt u3": lambda: value_and_grad(u3),
      "A A^T application (Gram kernels)": lambda: apply(gu, gv),
      "Gram operator build (once per call)": build,
      "direct: objective + gradient wrt (u1, v1)": lambda: direct_grad(u1, v1),
  }, repeats=20, warmup=2)
  body += ["Breakdown (median of 20 single calls, ms):", "",
           common.table(["part", "ms"],
                        [[k, 1000 * v] for k, v in parts.items()]), ""]

  mem = {}
  for m in ("gram", "direct"):
    for t in (0, 30):
      peak, base = map(float, common.run_probe(
          ["bench/latent.py", f"--size={args.size}", "--memory_probe", m,
           str(t)]).split())
      mem[(m, t)] = (peak, base)
  body += ["Peak resident memory while running inference, fresh process "
           "per row (MB; VmHWM reset after a first traced run; 'before' is "
           "VmRSS just before):", "",
           common.table(["method", "t", "peak RSS", "before",
                         "peak - before"],
                        [[m, t, p, b, p - b] for (m, t), (p, b) in
                         mem.items()]), ""]
  # FLOPs (TensorFlow's registered counts): the traced t=0 path (backbone,
  # subnets, refinement) and one latent step of the loop body.
  flops0 = common.graph_flops(
      e2e["gram"].get_concrete_function(image, tf.constant(0)).graph)
  step_flops = latent_ops.step_flops(
      lambda s: model.latent(u1, v1, target, steps=s,
                             method="gram")["probabilities"],
      tf.TensorSpec([], tf.int32))
  flop_ratio = (flops0 + 30 * step_flops) / flops0
  body += [f"FLOPs: t=0 path {flops0 / 1e9:.1f} GFLOP "
           f"({flops0 / 1e9 / times[('gram', 0)]:.0f} GFLOP/s end to end); "
           f"one gram latent step {step_flops / 1e6:.0f} MFLOP "
           f"({step_flops / 1e9 / per_step['gram']:.0f} GFLOP/s in the "
           f"latent loop alone); t=30 / t=0 in FLOPs {flop_ratio:.3f} (the "
           "time ratio if the latent steps ran at the t=0 path's FLOP "
           "rate).", ""]
  g = times
  body += [
      "Targets (same run):",
      common.target("gram end to end t=30 / t=0 (medians)",
                    g[("gram", 30)] / g[("gram", 0)], 1.05),
      common.target("gram end to end t=30 / t=0 (median of per-round "
                    "ratios)", paired("gram"), 1.05),
      common.target("per latent step, direct / gram (latent loop alone)",
                    per_step["direct"] / per_step["gram"], 10,
                    higher_is_better=True),
      common.target("gram peak RSS t=30 / t=0", mem[("gram", 30)][0] /
                    mem[("gram", 0)][0], 1.05),
      f"- (direct end to end t=30 / t=0, for reference: "
      f"{g[('direct', 30)] / g[('direct', 0)]:.3g})",
  ]
  common.emit("latent", "Latent inference (bench/latent.py)",
              "python bench/latent.py", "\n".join(body))


def _direct_grad(model, u1, v1, target):
  with tf.GradientTape() as tape:
    tape.watch([u1, v1])
    loss = tf.reduce_sum(latent_lib.latent_objective(model, u1, v1, target))
  return tape.gradient(loss, [u1, v1])


if __name__ == "__main__":
  main(sys.argv[1:])
