"""Caption parsing: throughput on one core, and accuracy on the web set.

  python bench/captions.py [--repeats=7] [--cpu=<id>]

Pins the process to one CPU (`os.sched_setaffinity`; the parser is pure
Python, so it would use one core anyway), loads the default lexicon, and
times `captions.parse_caption` on three workloads: the hand-written web
captions of tests/data/captions_web.tsv, the same joined three at a time
(long captions), and captions written by the synthetic generator
(`synthetic.make_caption`). Each run parses the workload enough times to
last at least 0.3 s; the median of `repeats` runs is reported. Then it
scores the parser on the web set: exact-match rate per split and per-class
precision / recall (the same numbers tests/test_data_captions.py asserts).
"""

import argparse
import os
import sys
import time

import common

import numpy as np

from dis_tf import classes
from dis_tf.data import captions
from dis_tf.data import synthetic

WEB_CAPTIONS = os.path.join(common.ROOT, "tests", "data", "captions_web.tsv")
TARGET_PER_SECOND = 50000


def _throughput(texts, lexicon, repeats, min_seconds=0.3):
  """Median captions per second of parse_caption over `texts`."""
  loops = 1
  while True:
    start = time.perf_counter()
    for _ in range(loops):
      for text in texts:
        captions.parse_caption(text, lexicon)
    if time.perf_counter() - start >= min_seconds:
      break
    loops *= 2

  def run():
    for _ in range(loops):
      for text in texts:
        captions.parse_caption(text, lexicon)

  seconds = common.timed(run, repeats=repeats, warmup=0)
  return loops * len(texts) / seconds


def _words(texts):
  return float(np.mean([len(t.split()) for t in texts]))


def _fmt(x):
  return "n/a" if x is None else f"{x:.3f}"


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--cpu", type=int, default=None,
                      help="CPU to pin to (default: the last one allowed).")
  args = parser.parse_args(argv)
  cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {cpu})

  lexicon = captions.load_lexicon()
  rows = captions.read_labelled_captions(WEB_CAPTIONS)
  web = [r["caption"] for r in rows]
  rng = np.random.default_rng(0)
  joined = [". ".join(rng.choice(web, size=3, replace=False))
            for _ in range(len(web))]
  synonyms = synthetic._synonyms_by_class()  # pylint: disable=protected-access
  generated = []
  for _ in range(len(web)):
    tags = sorted(rng.choice(np.arange(1, 21), size=int(rng.integers(1, 4)),
                             replace=False).tolist())
    generated.append(synthetic.make_caption(rng, tags, synonyms))

  workloads = [("web set (tests/data/captions_web.tsv)", web),
               ("web set, 3 captions joined", joined),
               ("synthetic generator captions", generated)]
  speed_rows, rates = [], {}
  for name, texts in workloads:
    rate = _throughput(texts, lexicon, args.repeats)
    rates[name] = rate
    speed_rows.append([name, len(texts), f"{_words(texts):.1f}",
                       f"{rate:,.0f}", f"{1e6 / rate:.1f}"])

  body = [f"Pinned to CPU {cpu} (one core), default lexicon "
          f"({len(lexicon)} phrases from {len(lexicon.paths)} files); median "
          f"of {args.repeats} runs of at least 0.3 s each.", "",
          common.table(["workload", "captions", "mean words", "captions/s",
                        "us / caption"], speed_rows), "", "Targets (same run):"]
  for name, _ in workloads:
    body.append(common.target(f"captions/s on one core, {name}", rates[name],
                              TARGET_PER_SECOND, higher_is_better=True))

  body += ["", "Accuracy on tests/data/captions_web.tsv (hand-written web "
           "captions; `dev` was used to develop the parser and `holdout` "
           "was written after it was frozen, scored once at 76/80 and then "
           "its misses were fixed, so both are now seen data; the file "
           "header records the earlier scores).", ""]
  acc_rows = []
  for split in ("dev", "holdout", None):
    part = [(r["caption"], r["tags"]) for r in rows
            if split is None or r["split"] == split]
    result = captions.score_captions(part, lexicon)
    acc_rows.append([split or "all", result["num"], result["exact"],
                     f"{100 * result['exact_rate']:.1f}%",
                     _fmt(result["micro_precision"]),
                     _fmt(result["micro_recall"])])
  body += [common.table(["split", "captions", "exact", "exact-match rate",
                         "micro precision", "micro recall"], acc_rows), ""]
  body.append(common.target("exact-match rate, all", result["exact_rate"],
                            0.95, higher_is_better=True))
  class_rows = [[name, r["support"], r["tp"], r["fp"], r["fn"],
                 _fmt(r["precision"]), _fmt(r["recall"])]
                for name, r in result["per_class"].items()]
  body += ["", "Per class (all captions):", "",
           common.table(["class", "expected", "tp", "fp", "fn", "precision",
                         "recall"], class_rows), ""]
  if result["misses"]:
    body.append("Misses:")
    body += [f"- {c!r}: expected {[classes.VOC_CLASSES[i] for i in w]}, "
             f"got {[classes.VOC_CLASSES[i] for i in g]}"
             for c, w, g in result["misses"]]
  common.emit("captions", "Caption parsing (bench/captions.py)",
              "python bench/captions.py", "\n".join(body))


if __name__ == "__main__":
  main(sys.argv[1:])
