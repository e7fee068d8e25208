"""The research loop's wall time: the demo, and one seed of the ablation.

  python bench/research_loop.py [--seeds=1] [--skip_demo] [--skip_ablation]

Runs, in a temporary directory and as a user runs them:
  - `python tools/demo.py` (generates the benchmark, trains, chooses t_test,
    evaluates, draws, exports and serves; README's main command);
  - `python tools/ablation.py --t_train=10` (the plan of RESULTS.md) for
    --seeds seeds on the benchmark the demo generated, and reads each seed's
    per-part wall times from its scores.json (`part_seconds`).
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


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--skip_demo", action="store_true")
  parser.add_argument("--skip_ablation", action="store_true")
  args = parser.parse_args(argv)
  body, lines = [], []
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "data")
    if not args.skip_demo:
      seconds = _run(["tools/demo.py", f"--data_root={data}",
                      f"--workdir={tmp}/demo"], os.path.join(tmp, "demo.log"))
      body.append(f"`python tools/demo.py` (benchmark generation included): "
                  f"{seconds:.0f} s.")
      lines.append(common.target("demo wall time (min)", seconds / 60, 4))
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
               f"(the RESULTS.md plan): {seconds / 60:.1f} min wall in all "
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
