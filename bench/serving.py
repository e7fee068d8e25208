"""Exported SavedModel (TF Serving's loader path): latency, batch throughput,
session threads, and mixed image sizes in one batch.

  python bench/serving.py [--backbone=resnet101] [--size=353] [--repeats=5]
      [--batch_repeats=3]

Exports a random-weight DIS model with `dis_tf.serving.export_lib` and loads
it the way TF Serving's C++ server does (`tf.compat.v1.saved_model.loader
.load` into a `tf.compat.v1.Session`, then `Session.run` on the
`serving_steps` signature, one `steps` value per image). Four tables, each
from runs interleaved round by round (`common.interleaved`):

1. latency of one 500x375 JPEG, steps 0 and 30, SavedModel vs
   `dis_tf.serving.module.predict_in_process` (same functions in process);
2. throughput of batches of 1, 2, 4 and 8 JPEGs at steps 0 and 30;
3. session thread settings (`ConfigProto` intra-/inter-op threads, TF
   Serving's `--tensorflow_intra_op_parallelism` /
   `--tensorflow_inter_op_parallelism`), one or two concurrent requests
   (what `num_batch_threads` of the batching parameters allows). Each
   setting runs in its own worker process: TensorFlow builds the CPU thread
   pools once per process, from the first session's config, so sessions
   with other settings in one process would not get their own;
4. a batch of equal-size JPEGs vs one of mixed sizes: every image is
   resized to the input size inside the graph, so the network cost is the
   same; what is padded to the batch's largest image is `class_ids`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

import common  # Puts the checkout on sys.path.

import numpy as np
import tensorflow as tf

BATCHES = (1, 2, 4, 8)
STEPS = (0, 30)
# (intra, inter) op threads; (0, 0) lets TensorFlow choose (one per core).
THREADS = ((0, 0), (2, 1), (1, 2), (1, 1))
# (batch, concurrent requests) of the thread table: 4 images in flight in
# both multi-image rows.
THREAD_LOADS = ((1, 1), (4, 1), (2, 2))
# (height, width): 500x375, 333x500, 200x150 and 640x480 images.
MIXED = ((375, 500), (500, 333), (150, 200), (480, 640))


def _jpeg(rng, height, width):
  pixels = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
  return tf.io.encode_jpeg(pixels).numpy()


def load_session(path, intra=0, inter=0):
  """(session, run(jpegs, steps)) on `serving_steps`, as TF Serving loads."""
  sess = tf.compat.v1.Session(
      graph=tf.Graph(),
      config=tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra,
                                      inter_op_parallelism_threads=inter))
  with sess.graph.as_default():
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
  sig = meta.signature_def["serving_steps"]
  fetches = {k: v.name for k, v in sig.outputs.items()}

  def run(jpegs, steps):
    return sess.run(fetches, {sig.inputs["image_bytes"].name: list(jpegs),
                              sig.inputs["steps"].name: [steps] * len(jpegs)})

  return sess, run


def worker(path, jpeg_file, intra, inter):
  """Worker process of the thread table: one session, requests from stdin.

  Reads lines "batch concurrent steps", runs `concurrent` requests of
  `batch` copies of the JPEG at once (one Python thread each, as TF Serving
  runs concurrent requests on one session) and answers "done".
  """
  _, run = load_session(path, intra, inter)
  with open(jpeg_file, "rb") as f:
    jpeg = f.read()
  print("ready", flush=True)
  for line in sys.stdin:
    batch, concurrent, steps = (int(x) for x in line.split())
    errors = []

    def request():
      try:
        run([jpeg] * batch, steps)
      except Exception as e:  # Reported to the parent, which stops.
        errors.append(repr(e))

    threads = [threading.Thread(target=request) for _ in range(concurrent)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    print(f"error {errors[0]}" if errors else "done", flush=True)


class Worker:
  """A `worker` subprocess with one (intra, inter) thread setting."""

  def __init__(self, path, jpeg_file, intra, inter):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", path,
         jpeg_file, str(intra), str(inter)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        cwd=common.ROOT)
    self._expect("ready")

  def _expect(self, word):
    line = self.proc.stdout.readline().strip()
    if line != word:
      raise RuntimeError(f"worker {self.proc.pid} said {line!r}, rc "
                         f"{self.proc.poll()}")

  def request(self, batch, concurrent, steps):
    self.proc.stdin.write(f"{batch} {concurrent} {steps}\n")
    self.proc.stdin.flush()
    self._expect("done")

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def latency_table(model, path, jpeg, args):
  """Table 1: one JPEG, SavedModel Session vs in-process, and targets."""
  from dis_tf.serving import module as serving_module
  module = serving_module.build_serving_module(model, 30, args.size)
  sess, served = load_session(path)

  def in_process(t):
    return serving_module.predict_in_process(model, [jpeg], t, args.size,
                                             module=module)

  saved, inproc = ("SavedModel, TF1 Session + loader.load",
                   "in process (predict_in_process)")
  fns = {}
  for t in STEPS:
    fns[(saved, t)] = lambda t=t: served([jpeg], t)
    fns[(inproc, t)] = lambda t=t: in_process(t)
  same = bool(np.array_equal(served([jpeg], 30)["class_ids"],
                             in_process(30)["class_ids"]))
  times = common.interleaved(fns, repeats=args.repeats, warmup=1)
  sess.close()
  rows = [[k[0], k[1], v] for k, v in times.items()]
  lines = [common.target(f"t_test={t}: SavedModel / in-process latency",
                         times[(saved, t)] / times[(inproc, t)], 1.10)
           for t in STEPS]
  return [f"One 500x375 JPEG per request; median of {args.repeats} "
          f"interleaved requests after one warm-up. Same labelmap from both "
          f"paths: {same}.", "",
          common.table(["path", "steps", "latency (s)"], rows), "",
          "Targets (same run):"] + lines


def batch_table(served, jpeg, repeats):
  """Table 2: images/s of batches of equal JPEGs at each steps value."""
  fns = {(b, t): (lambda b=b, t=t: served([jpeg] * b, t))
         for t in STEPS for b in BATCHES}
  times = common.interleaved(fns, repeats=repeats, warmup=1)
  rows = []
  for (b, t), s in times.items():
    rate = b / s
    rows.append([t, b, s, s / b, rate, rate / (1 / times[(1, t)])])
  return [f"Batches of identical 500x375 JPEGs (`steps` = the same value "
          f"for every image), default session threads; median of {repeats} "
          "interleaved requests after one warm-up. Per-image latency is "
          "request latency / batch (every image of a batch waits for the "
          "whole request).", "",
          common.table(["steps", "batch", "request latency (s)",
                        "per image (s)", "images/s",
                        "images/s / batch 1"], rows)]


def thread_table(path, jpeg, repeats, tmp):
  """Table 3: thread settings in worker processes, interleaved."""
  jpeg_file = os.path.join(tmp, "request.jpg")
  with open(jpeg_file, "wb") as f:
    f.write(jpeg)
  workers = {s: Worker(path, jpeg_file, *s) for s in THREADS}
  t = STEPS[-1]
  fns = {(s, b, c): (lambda w=w, b=b, c=c: w.request(b, c, t))
         for s, w in workers.items() for b, c in THREAD_LOADS}
  times = common.interleaved(fns, repeats=repeats, warmup=1)
  for w in workers.values():
    w.close()
  rows = []
  for (s, b, c), sec in times.items():
    rate = b * c / sec
    base = b * c / times[(THREADS[0], b, c)]
    rows.append([f"({s[0]}, {s[1]})", b, c, sec, rate, rate / base])
  return [f"steps={t}; one worker process per setting, each with its own "
          "session on the same SavedModel; \"concurrent\" requests are sent "
          "at once from threads of the worker (TF Serving with "
          "`num_batch_threads` >= 2 runs batches so). Median of "
          f"{repeats} interleaved rounds after one warm-up; (0, 0) is "
          "TensorFlow's default.", "",
          common.table(["(intra, inter) threads", "batch", "concurrent",
                        "wall time (s)", "images/s",
                        "images/s / (0, 0)"], rows)]


def mixed_table(served, jpeg, rng, repeats):
  """Table 4: equal vs mixed image sizes in one batch of 4, steps 0."""
  mixed = [_jpeg(rng, h, w) for h, w in MIXED]
  batches = {"equal: 4 x 500x375": [jpeg] * len(MIXED),
             "mixed: 500x375, 333x500, 200x150, 640x480": mixed}
  times = common.interleaved(
      {k: (lambda v=v: served(v, 0)) for k, v in batches.items()},
      repeats=repeats, warmup=1)
  rows = []
  for name, jpegs in batches.items():
    out = served(jpegs, 0)
    ids = out["class_ids"]
    real = int(np.sum(out["height"] * out["width"]))
    rows.append([name, times[name], len(jpegs) / times[name],
                 "x".join(str(d) for d in ids.shape), ids.nbytes / 2**20,
                 1 - real / ids.size,
                 sum(v.nbytes for v in out.values()) / 2**20])
  equal, mix = batches
  return [f"Batch of {len(MIXED)} at steps 0; median of {repeats} "
          "interleaved requests after one warm-up. Mixed / equal time: "
          f"{times[mix] / times[equal]:.3g}. `class_ids` bytes are the "
          "int32 output as returned by `Session.run` (REST / gRPC encode "
          "the padding too).", "",
          common.table(["batch", "request latency (s)", "images/s",
                        "class_ids shape", "class_ids (MiB)",
                        "padding share of class_ids",
                        "all outputs (MiB)"], rows)]


def main(argv):
  if argv and argv[0] == "--worker":
    path, jpeg_file, intra, inter = argv[1:5]
    worker(path, jpeg_file, int(intra), int(inter))
    return
  parser = argparse.ArgumentParser()
  parser.add_argument("--backbone", default="resnet101")
  parser.add_argument("--size", type=int, default=353)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch_repeats", type=int, default=3)
  args = parser.parse_args(argv)
  from dis_tf import config as config_lib
  from dis_tf.modeling.dis_model import build_dis_model
  from dis_tf.serving import export_lib
  start = time.perf_counter()
  config = config_lib.voc12()
  config.model.backbone = args.backbone
  config.model.weights = None
  model = build_dis_model(config)
  rng = np.random.RandomState(0)
  jpeg = _jpeg(rng, 375, 500)
  with tempfile.TemporaryDirectory() as tmp:
    path = export_lib.export_saved_model(model, tmp, t_test=30,
                                         input_size=args.size, warmup=False)
    latency = latency_table(model, path, jpeg, args)
    sess, served = load_session(path)
    batch = batch_table(served, jpeg, args.batch_repeats)
    mixed = mixed_table(served, jpeg, rng, args.batch_repeats)
    sess.close()
    threads = thread_table(path, jpeg, args.batch_repeats, tmp)
  body = ([f"{args.backbone} (random weights), input {args.size}, "
           "`serving_steps` signature.", "", "**Latency, one image.**", ""]
          + latency + ["", "**Throughput by batch size.**", ""] + batch
          + ["", "**Session threads.**", ""] + threads
          + ["", "**Equal vs mixed image sizes in one batch.**", ""] + mixed
          + ["", f"Whole script: {(time.perf_counter() - start) / 60:.1f} "
             "min."])
  common.emit("serving", "Serving (bench/serving.py)",
              "python bench/serving.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
