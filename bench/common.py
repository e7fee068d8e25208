"""Shared helpers of the hand-run benchmark scripts (never part of pytest).

Every script prints one Markdown section (a table plus target lines computed
from the same run) and writes it to `bench/results/<name>.md`;
`bench/run_all.py` assembles those files into BENCHMARKS.md verbatim.
"""

import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# Taken when a script starts (every script imports this module first);
# `emit` runs at the end, when the other jobs on the machine may differ.
_LOAD_AT_START = os.getloadavg()


def machine():
  """One line describing the machine and software."""
  cpu = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  # Imported when used: run_all.py imports this module without TensorFlow.
  import keras
  import tensorflow as tf
  start, end = (", ".join(f"{x:.2f}" for x in load)
                for load in (_LOAD_AT_START, os.getloadavg()))
  return (f"{cpu}, {os.cpu_count()} logical CPUs, Python "
          f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras "
          f"{keras.__version__}; load average at start {start}, at end {end}")


def table(headers, rows):
  """A Markdown table."""
  def cell(x):
    if isinstance(x, float):
      return f"{x:.4g}"
    return str(x)
  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
  return "\n".join(lines)


def timed(fn, repeats=3, warmup=1):
  """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def interleaved(fns, repeats=3, warmup=1):
  """{name: median seconds}, the runs of all fns interleaved round by round
  (so load changes from other jobs hit every configuration alike)."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def interleaved_stats(fns, repeats=3, warmup=1):
  """{name: (median, min, all runs) seconds}, interleaved as `interleaved`."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: (statistics.median(t), min(t), t) for name, t in times.items()}


def graph_flops(graph, skip=()):
  """Float operations of the ops of a traced graph (TF's registered counts).

  The counts are TensorFlow's own (`ops.get_stats_for_node_def(..., "flops")`,
  what the TF profiler sums: 2 x multiply-adds of Conv2D, its input
  gradient, MatMul, ...); op types in `skip` are left out. Ops inside
  nested function bodies (while loops, conds) are not counted.
  """
  from tensorflow.python.framework import ops  # The profiler's registry.
  total = 0
  for op in graph.get_operations():
    if op.type in skip:
      continue
    try:
      stat = ops.get_stats_for_node_def(graph, op.node_def, "flops")
    except ValueError:          # No count registered, or unknown shapes.
      continue
    total += stat.value or 0
  return total


def max_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def target(label, value, limit, higher_is_better=False):
  """A target line: met or missed, and by how much."""
  ok = value >= limit if higher_is_better else value <= limit
  sign = ">=" if higher_is_better else "<="
  # Enough digits that a value just off its limit does not print as it.
  digits = 3
  while digits < 8 and float(f"{value:.{digits}g}") == limit and value != limit:
    digits += 1
  shown = f"{value:.{digits}g}"
  if ok:
    return f"- {label}: {shown} (target {sign} {limit:g}): **met**"
  by = (limit / value - 1) if higher_is_better else (value / limit - 1)
  by = f"{100 * by:.0f}%" if 100 * by >= 0.5 else f"{100 * by:.2f}%"
  return (f"- {label}: {shown} (target {sign} {limit:g}): **missed** by "
          f"{by}")


def emit(name, title, command, body):
  """Prints the section and writes bench/results/<name>.md."""
  text = (f"## {title}\n\n`{command}`\n\nMachine: {machine()}; run "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n"
          f"{body.rstrip()}\n")
  os.makedirs(RESULTS, exist_ok=True)
  with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
    f.write(text)
  print(text)
  return text


def run_probe(args, env=None):
  """Runs `python <args>` and returns its last stdout line.

  Args:
    args: the script and its arguments.
    env: extra environment variables of the child (added to this process's).
  """
  out = subprocess.run([sys.executable] + list(args), check=True,
                       capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, **(env or {})))
  return out.stdout.strip().splitlines()[-1]


def resnet_model(num_classes=21, **latent):
  """A dilated-ResNet101 DISModel with random weights (no download)."""
  from dis_tf import config as config_lib
  from dis_tf.modeling.dis_model import build_dis_model
  config = config_lib.voc12()
  config.model.weights = None
  config.model.num_classes = num_classes
  for key, value in latent.items():
    setattr(config.latent, key, value)
  return build_dis_model(config), config


def run_python(args, log):
  """Runs `python args` from the checkout, output to `log`; wall seconds."""
  start = time.time()
  with open(log, "w") as f:
    subprocess.run([sys.executable] + args, check=True, cwd=ROOT,
                   stdout=f, stderr=subprocess.STDOUT,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                            PYTHONPATH=ROOT))
  return time.time() - start


def synthetic_paths(data_root):
  """The --voc_dir, --weak_dir and --data_dir flags of a synthetic
  benchmark's folder."""
  return [f"--voc_dir={data_root}",
          f"--weak_dir={os.path.join(data_root, 'web_tags')}",
          f"--data_dir={os.path.join(data_root, 'tfds')}"]


def train_once(data_root, model_dir, seed, *extra):
  """`tools/train.py` on the `synthetic` preset into `model_dir`, unless a
  finished run's timing.json is there. Returns its training seconds."""
  import json
  timing = os.path.join(model_dir, "timing.json")
  if not os.path.exists(timing):
    os.makedirs(model_dir, exist_ok=True)
    seconds = run_python(
        ["tools/train.py", "--preset=synthetic", "--stage=all",
         f"--model_dir={model_dir}", f"--seed={seed}", *extra,
         *synthetic_paths(data_root)],
        os.path.join(model_dir, "train.log"))
    with open(timing, "w") as f:
      json.dump({"train_seconds": seconds}, f)
  with open(timing) as f:
    return json.load(f)["train_seconds"]


def prepare_synthetic(data_root):
  """The benchmark in `data_root` (the demo's default one generated if the
  folder holds none; one of other parameters is used, never replaced) and its
  tfds datasets prepared.

  Returns:
    The generator's parameters of the benchmark measured on.
  """
  from dis_tf import config as config_lib
  from dis_tf.data import pipeline
  from dis_tf.data import synthetic
  params = synthetic.use_or_generate(data_root)["params"]
  print(f"benchmark {data_root}: {params}", flush=True)
  pipeline.prepare_datasets(config_lib.resolve_config(
      "synthetic", synthetic.config_overrides(data_root)))
  return params
