"""Peak memory and s/step of voc12 training at the paper's batch size.

  python bench/train_memory.py [--batches=10,8,6,4] [--steps=3]
      [--t_trains=10,30] [--crop_size=353] [--guard_gib=1]

voc12 preset: dilated ResNet101 (random weights), 353x353 crops, SGD with
momentum. Phase (c) of stage 1 (all four parts train; every image labelled)
and stage 2 (half the batch tag-only, pseudo labels from `t_train` latent
steps) at the preset's `t_train` and at 30. Each configuration runs in its
own subprocess, so its peak RSS (`ru_maxrss`) is its own: model build, one
traced warm-up step, then `--steps` timed steps (median reported) on one
random batch. The parent watches MemAvailable and kills a probe that would
leave less than `--guard_gib` free (other jobs share this machine); a batch
that does not fit is reported and the next smaller one tried.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # Puts the checkout on sys.path.


def mem_available_gib():
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) / 2**20
  return float("nan")


def _vm_hwm_gib(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return float("nan")


def _name(phase, t_train):
  return "stage 1, phase (c)" if phase == "c" else f"stage 2, t_train={t_train}"


def probe(phase, batch_size, t_train, steps, crop_size):
  """Child process: one configuration; prints a JSON line."""
  import keras
  import tensorflow as tf

  import train_step
  from dis_tf import config as config_lib
  from dis_tf.data import pipeline
  from dis_tf.modeling.dis_model import build_dis_model
  config = config_lib.voc12()
  config.model.weights = None
  config.train.batch_size = batch_size
  keras.utils.set_random_seed(0)
  model = build_dis_model(config)
  num_weak = 0
  if phase == "semi":
    _, num_weak = pipeline.split_batch_sizes(batch_size,
                                             config.data.weak_fraction)
    model.t_train = t_train
  model.set_phase(phase)
  model.compile(optimizer=train_step._optimizer(config))
  batch = train_step._batch(model, crop_size, batch_size, num_weak)
  step = tf.function(model.train_step)
  run = lambda: [v.numpy() for v in step(batch).values()]
  start = time.perf_counter()
  run()                                      # Traces, then one step.
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  print(json.dumps({"rss_gib": common.max_rss_mb() / 1024, "first": first,
                    "times": times, "num_weak": num_weak}))


def run_probe(phase, batch_size, t_train, steps, crop_size, guard_gib):
  """Runs `probe` in a subprocess; (result dict or None, failure reason)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), "--probe", phase,
       str(batch_size), str(t_train), str(steps), str(crop_size)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
      cwd=common.ROOT)
  killed, hwm = None, 0.0
  while proc.poll() is None:
    hwm = max(hwm, _vm_hwm_gib(proc.pid))
    if mem_available_gib() < guard_gib:
      killed = (f"killed by this script at {hwm:.1f} GiB RSS: MemAvailable "
                f"fell below {guard_gib:g} GiB")
      proc.kill()
      break
    time.sleep(0.5)
  out, err = proc.communicate()
  if killed:
    return None, killed
  if proc.returncode != 0:
    last = (err.strip().splitlines() or ["?"])[-1]
    return None, f"rc {proc.returncode} at {hwm:.1f} GiB RSS: {last[:200]}"
  return json.loads(out.strip().splitlines()[-1]), ""


def main(argv):
  if argv and argv[0] == "--probe":
    probe(argv[1], *(int(x) for x in argv[2:6]))
    return
  parser = argparse.ArgumentParser()
  parser.add_argument("--batches", default="10,8,6,4")
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--t_trains", default="10,30")
  parser.add_argument("--guard_gib", type=float, default=1.0)
  parser.add_argument("--crop_size", type=int, default=None,
                      help="default: the preset's (353)")
  args = parser.parse_args(argv)
  from dis_tf import config as config_lib
  preset = config_lib.voc12()
  args.crop_size = args.crop_size or preset.data.crop_size
  batches = [int(b) for b in args.batches.split(",")]
  configs = [("c", 0)] + [("semi", int(t)) for t in args.t_trains.split(",")]
  available = mem_available_gib()
  print(f"MemAvailable at start: {available:.1f} GiB", flush=True)
  start = time.perf_counter()
  rows, fits, failed = [], {}, set()
  for phase, t in configs:
    name = _name(phase, t)
    for b in batches:
      before = mem_available_gib()
      result, why = run_probe(phase, b, t, args.steps, args.crop_size,
                              args.guard_gib)
      if result is None:
        rows.append([name, b, "-", "-", "-", "-", before, f"no: {why}"])
        failed.add((name, b))
        print(rows[-1], flush=True)
        continue
      rows.append([name, b, result["num_weak"], result["rss_gib"],
                   statistics.median(result["times"]), result["first"],
                   before, "yes"])
      print(rows[-1], flush=True)
      fits[name] = b
      break
  lines = []
  for phase, t in configs:
    name = _name(phase, t)
    b, paper = fits.get(name), preset.train.batch_size
    if (name, paper) not in failed and (b is None or b < paper):
      lines.append(f"- {name}: batch {paper} not tried (--batches).")
    elif b == paper:
      lines.append(f"- {name}: the paper's batch {b} fits; no gradient "
                   "accumulation needed.")
    elif b is None:
      lines.append(f"- {name}: none of the batches {args.batches} fits.")
    else:
      lines.append(f"- {name}: batch {paper} does not fit; the largest "
                   f"tried that fits is {b} (gradient accumulation over "
                   f"{-(-paper // b)} micro-batches would reach the paper's "
                   "batch).")
  total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
  body = [f"voc12 preset (resnet101, random weights, crop {args.crop_size}, "
          f"{preset.train.optimizer} with momentum; preset batch "
          f"{preset.train.batch_size}, t_train {preset.latent.t_train}). "
          f"MemAvailable at start: {available:.1f} GiB of {total:.1f} GiB. "
          "One subprocess per row; peak RSS is that process's "
          f"`ru_maxrss`; s/step is the median of {args.steps} steps after "
          "one traced warm-up step (its time, tracing included, in its own "
          "column). Batches are tried largest first until one fits.", "",
          common.table(["configuration", "batch", "weak in batch",
                        "peak RSS (GiB)", "s/step", "first step (s)",
                        "MemAvailable before (GiB)", "fits"], rows), "",
          "Result (same run):"] + lines + [
          "", f"Whole script: {(time.perf_counter() - start) / 60:.1f} min."]
  common.emit("train_memory",
              "Training memory at the paper's batch (bench/train_memory.py)",
              "python bench/train_memory.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
