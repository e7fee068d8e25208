"""What the demo's determinism costs: its training with and without it.

  python bench/determinism.py [--data_root=data/synthetic] [--rounds=2]
      [--steps_percent=25]

`tools/demo.py` trains with `data.deterministic` (issue 26, a reproducible
demo): the input pipelines keep their order and are seeded by
`train.seed`, and `tf.config.experimental.enable_op_determinism()` is on
(dis_tf/training.py). This script trains the demo's setting (the
`synthetic` preset on the demo's benchmark) with --steps_percent of every
phase's steps, with and without it, alternating run by run for --rounds
rounds so that a change of the machine's load falls on both, and reports
the wall clock of each and their ratio. Each run is a fresh
`tools/train.py` process in a new model_dir (TensorFlow start-up and
tracing included, as in the demo).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common  # Puts the checkout on sys.path.

from dis_tf import config as config_lib


def _train(data_root, model_dir, deterministic, percent):
  preset = config_lib.synthetic()
  steps = [f"--{key}={max(1, getattr(preset.train, key) * percent // 100)}"
           for key in ("phase_a_steps", "phase_b_steps", "phase_c_steps",
                       "semi_steps")]
  start = time.time()
  subprocess.run(
      [sys.executable, "tools/train.py", "--preset=synthetic",
       f"--model_dir={model_dir}", f"--voc_dir={data_root}",
       f"--weak_dir={os.path.join(data_root, 'web_tags')}",
       f"--data_dir={os.path.join(data_root, 'tfds')}",
       f"--data.deterministic={str(deterministic).lower()}", *steps],
      check=True, cwd=common.ROOT, capture_output=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=common.ROOT))
  return time.time() - start


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_root", default="data/synthetic")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps_percent", type=int, default=25)
  args = parser.parse_args()
  data_root = os.path.abspath(args.data_root)
  if not os.path.isdir(os.path.join(data_root, "tfds")):
    raise SystemExit(f"--data_root={args.data_root}: no prepared benchmark "
                     "there (python tools/demo.py prepares it).")
  times = {True: [], False: []}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      for deterministic in (False, True):
        model_dir = os.path.join(tmp, f"{deterministic}_{r}")
        times[deterministic].append(
            _train(data_root, model_dir, deterministic, args.steps_percent))
        print(f"round {r} deterministic={deterministic}: "
              f"{times[deterministic][-1]:.1f} s", flush=True)
  ratios = [d / n for d, n in zip(times[True], times[False])]
  rows = [[r, f"{n:.1f}", f"{d:.1f}", f"{q:.2f}"] for r, (n, d, q) in
          enumerate(zip(times[False], times[True], ratios))]
  mean = statistics.mean(ratios)
  body = "\n".join([
      f"The demo's setting with {args.steps_percent}% of every phase's "
      f"steps, {args.rounds} rounds, each run a fresh tools/train.py.",
      "",
      common.table(["round", "default (s)", "deterministic (s)",
                    "deterministic / default"], rows),
      "",
      f"- Determinism costs {100 * (mean - 1):+.0f}% of the training wall "
      f"clock on average ({min(ratios):.2f}x to {max(ratios):.2f}x).",
  ])
  common.emit("determinism", "What the demo's determinism costs (issue 26)",
              "python bench/determinism.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
  main()
