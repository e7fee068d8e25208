"""Exported SavedModel latency (TF Serving's loader path) vs in-process.

  python bench/serving.py [--backbone=resnet101] [--size=353] [--repeats=5]

Exports a random-weight DIS model with `dis_tf.serving.export_lib`, loads it
the way TF Serving's C++ server does (`tf.compat.v1.saved_model.loader.load`
into a Session, then `Session.run` on the `serving_steps` signature), and
times one JPEG request with steps 0 and 30 against
`dis_tf.serving.module.predict_in_process` (the same serving functions
run eagerly-dispatched in this process). Runs are interleaved.
"""

import argparse
import sys
import tempfile

import common  # Puts the checkout on sys.path.

import numpy as np
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf.modeling.dis_model import build_dis_model
from dis_tf.serving import export_lib
from dis_tf.serving import module as serving_module


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--backbone", default="resnet101")
  parser.add_argument("--size", type=int, default=353)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  config = config_lib.voc12()
  config.model.backbone = args.backbone
  config.model.weights = None
  model = build_dis_model(config)
  rng = np.random.RandomState(0)
  jpeg = tf.io.encode_jpeg(
      rng.randint(0, 256, (375, 500, 3)).astype(np.uint8)).numpy()
  with tempfile.TemporaryDirectory() as tmp:
    path = export_lib.export_saved_model(model, tmp, t_test=30,
                                         input_size=args.size, warmup=False)
    module = serving_module.build_serving_module(model, 30, args.size)
    sess = tf.compat.v1.Session(graph=tf.Graph())
    with sess.graph.as_default():
      meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    sig = meta.signature_def["serving_steps"]
    fetches = {k: v.name for k, v in sig.outputs.items()}

    def served(t):
      return sess.run(fetches, {sig.inputs["image_bytes"].name: [jpeg],
                                sig.inputs["steps"].name: [t]})

    def in_process(t):
      return serving_module.predict_in_process(model, [jpeg], t, args.size,
                                               module=module)

    fns = {}
    for t in (0, 30):
      fns[("SavedModel, TF1 Session + loader.load", t)] = (
          lambda t=t: served(t))
      fns[("in process (predict_in_process)", t)] = (
          lambda t=t: in_process(t))
    a, b = served(30), in_process(30)
    same = bool(np.array_equal(a["class_ids"], b["class_ids"]))
    times = common.interleaved(fns, repeats=args.repeats, warmup=1)
    sess.close()
  rows = [[k[0], k[1], v] for k, v in times.items()]
  lines = []
  for t in (0, 30):
    ratio = (times[("SavedModel, TF1 Session + loader.load", t)]
             / times[("in process (predict_in_process)", t)])
    lines.append(common.target(
        f"t_test={t}: SavedModel / in-process latency", ratio, 1.10))
  body = [f"{args.backbone} (random weights), input {args.size}, one 500x375 "
          f"JPEG per request, `serving_steps` signature; median of "
          f"{args.repeats} interleaved requests after one warm-up. Same "
          f"labelmap from both paths: {same}.", "",
          common.table(["path", "steps", "latency (s)"], rows), "",
          "Targets (same run):"] + lines
  common.emit("serving", "Serving latency (bench/serving.py)",
              "python bench/serving.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
