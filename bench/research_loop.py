"""The research loop's wall time: the demo, and one seed of the ablation.

  python bench/research_loop.py [--seeds=1] [--skip_demo] [--skip_ablation]
      [--demo_precisions=float32,mixed_bfloat16]

Runs, in a temporary directory and as a user runs them:
  - `python tools/demo.py` (generates the benchmark, trains, chooses t_test,
    evaluates, draws, exports and serves; README's main command);
  - `python tools/ablation.py --t_train=10` (one t_train; RESULTS.md's
    grid has 5, 10 and 30, and states its own time) for
    --seeds seeds on the benchmark the demo generated, and reads each seed's
    per-part wall times from its scores.json (`part_seconds`).
With --demo_precisions the demo runs once per precision (its --precision
flag), one after the other, each from an empty folder (benchmark
generation included), so the ratio is measured side by side; the demo's
time targets (issue 26: <= 4 min; issue 29: <= 3 min where bf16 is the
default) are read on the precision the demo's own default resolves to on
this machine.
The 5-seed time is given as 5 x the mean seed: every seed runs the same
phases and scoring on the same data, only the training seed differs (the
RESULTS.md run took 87.7 min for its 5 seeds before this change).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import common  # Puts the checkout on sys.path.

import numpy as np


def _run(command, log):
  start = time.time()
  with open(log, "w") as f:
    subprocess.run([sys.executable] + command, check=True, cwd=common.ROOT,
                   stdout=f, stderr=subprocess.STDOUT)
  return time.time() - start


def _bf16_flags():
  from dis_tf import config as config_lib
  from precision import cpu_flags  # bench/ is the script's directory.
  return ", ".join(f for f, present in cpu_flags().items()
                   if present and f in config_lib.BF16_CPU_FLAGS)


def _demo_default_precision():
  """What `tools/demo.py` without --precision trains in, on this machine."""
  from dis_tf import config as config_lib
  # absl's --helpfull exits with status 1 after printing.
  out = subprocess.run(
      [sys.executable, "tools/demo.py", "--helpfull"], cwd=common.ROOT,
      capture_output=True, text=True, check=False).stdout
  default = out.split("--precision:", 1)[1].split("(default: '", 1)[1]
  default = default.split("'", 1)[0]
  return (config_lib.host_precision() if default == config_lib.PRECISION_AUTO
          else default)


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--skip_demo", action="store_true")
  parser.add_argument("--skip_ablation", action="store_true")
  parser.add_argument("--demo_precisions", default="float32,mixed_bfloat16",
                      help="The demo's --precision values to time.")
  args = parser.parse_args(argv)
  body, lines = [], []
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "data")
    if not args.skip_demo:
      demo_seconds = {}
      for precision in args.demo_precisions.split(","):
        root = os.path.join(tmp, f"demo_{precision}")
        demo_seconds[precision] = _run(
            ["tools/demo.py", f"--data_root={root}/data",
             f"--workdir={root}/demo", f"--precision={precision}"],
            os.path.join(tmp, f"demo_{precision}.log"))
        body.append(f"`python tools/demo.py --precision={precision}` "
                    f"(benchmark generation included): "
                    f"{demo_seconds[precision]:.0f} s.")
        print(body[-1], flush=True)
      default = _demo_default_precision()
      body.append(f"The demo's default precision on this machine: {default} "
                  f"(CPU bf16 flags: {_bf16_flags() or 'none'}).")
      if default in demo_seconds:
        lines.append(common.target(
            f"demo wall time at its default ({default}, min)",
            demo_seconds[default] / 60, 4))
        if default == "mixed_bfloat16":
          lines.append(common.target(
              "demo wall time where bf16 is the default (min, issue 29)",
              demo_seconds[default] / 60, 3))
      if {"float32", "mixed_bfloat16"} <= set(demo_seconds):
        ratio = demo_seconds["float32"] / demo_seconds["mixed_bfloat16"]
        body.append(f"Demo wall time float32 / mixed_bfloat16: {ratio:.2f}.")
    if not args.skip_ablation:
      seeds = ",".join(str(s) for s in range(args.seeds))
      workdir = os.path.join(tmp, "ablation")
      seconds = _run(
          ["tools/ablation.py", f"--data_root={data}", f"--workdir={workdir}",
           f"--output={tmp}/RESULTS.md", "--t_train=10", f"--seeds={seeds}"],
          os.path.join(tmp, "ablation.log"))
      parts = [json.load(open(os.path.join(workdir, f"seed_{s}",
                                           "scores.json")))["result"]
               for s in range(args.seeds)]
      rows = [[label, np.mean([p["part_seconds"][label] for p in parts]) / 60]
              for label in parts[0]["part_seconds"]]
      per_seed = np.mean([p["seconds"] for p in parts]) / 60
      rows.append(["whole seed (scores.json)", per_seed])
      body += ["", f"`python tools/ablation.py --t_train=10 --seeds={seeds}` "
               f"(one t_train): {seconds / 60:.1f} min wall in all "
               f"(benchmark generation excluded, it was there). Per seed "
               "(mean), by part:", "",
               common.table(["part", "min"], rows)]
      lines.append(common.target(
          "tools/ablation.py, 5 seeds (5 x the mean seed, min)",
          5 * per_seed, 60))
  body += ["", "Targets (same run):"] + lines
  common.emit("research_loop", "Research loop (bench/research_loop.py)",
              "python bench/research_loop.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
