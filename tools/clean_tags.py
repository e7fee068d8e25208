r"""Cleans the noisy tags of a web-tag folder with training-mode inference.

The paper's second property of DIS (Sec. 3.1): with the given tags in the
latent objective, t_train gradient steps on (u1, v1) yield cleaned tags
(sigmoid(v3) > threshold) and a labelmap for every weak image.

Example (1500 synthetic weak images, tiny backbone, t_train=10: about
2-3 minutes on 2 CPU cores):

  python tools/clean_tags.py --model_dir=runs/synthetic \
      --weak_dir=data/synthetic/web_tags [--t_train=10 --limit=200]

Writes to --output_dir (default MODEL_DIR/clean_tags): cleaned_tags.jsonl
(one line per image: file name, given tags, cleaned tags, per-class tag
probabilities, labelmap path), labelmaps/*.png (VOC palette PNGs whose pixel
values are class ids) and report.json. When the folder has an evaluation
truth (truth/truth.jsonl, written by the synthetic generator) it also
reports tag precision / recall / F1 of the given and of the cleaned tags and
the mIoU of the inferred labelmaps.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from dis_tf import classes
from dis_tf import evaluation
from dis_tf.data import pipeline
from dis_tf.data import web_tags

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None,
                    "Training directory with config.json and model.keras.")
flags.DEFINE_string("weak_dir", None,
                    "web_tags folder (images + annotations.jsonl); default "
                    "config.data.weak_dir.")
flags.DEFINE_string("data_dir", None,
                    "tensorflow-datasets data dir (overrides "
                    "config.data.data_dir).")
flags.DEFINE_string("output_dir", None,
                    "Output folder (default MODEL_DIR/clean_tags).")
flags.DEFINE_integer("t_train", None,
                     "Latent steps of training-mode inference (default "
                     "config.latent.t_train).")
flags.DEFINE_float("tag_threshold", None,
                   "Threshold on sigmoid(v3) for the cleaned tags (default "
                   "config.latent.tag_threshold).")
flags.DEFINE_integer("limit", None, "Process only the first N images.")
flags.DEFINE_boolean("use_truth", True,
                     "Score against WEAK_DIR/truth/truth.jsonl when it "
                     "exists (synthetic benchmark).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.model_dir:
    raise app.UsageError("--model_dir is required.")
  if FLAGS.limit is not None and FLAGS.limit < 1:
    raise app.UsageError(f"--limit={FLAGS.limit} must be >= 1.")
  if FLAGS.t_train is not None and FLAGS.t_train < 0:
    raise app.UsageError(f"--t_train={FLAGS.t_train} must be >= 0.")
  config, model = evaluation.load_model_dir(
      FLAGS.model_dir, data_dir=FLAGS.data_dir, weak_dir=FLAGS.weak_dir)
  weak_dir = config.data.weak_dir
  if not weak_dir:
    raise app.UsageError("--weak_dir is required (config.json has no "
                         "data.weak_dir).")
  if not os.path.isdir(weak_dir):
    raise FileNotFoundError(f"--weak_dir={weak_dir}: no such directory.")
  t_train = config.latent.t_train if FLAGS.t_train is None else FLAGS.t_train
  threshold = (config.latent.tag_threshold if FLAGS.tag_threshold is None
               else FLAGS.tag_threshold)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "clean_tags")

  truth = None
  if FLAGS.use_truth:
    try:
      truth = web_tags.load_weak_truth(weak_dir)
      logging.info("Scoring against the truth of %d images", len(truth))
    except FileNotFoundError:
      logging.info("No evaluation truth in %s: writing tags only.", weak_dir)

  dataset = pipeline.weak_eval_dataset(config)
  report = evaluation.clean_tags(
      model, dataset, output_dir, t_train, tag_threshold=threshold,
      truth=truth, limit=FLAGS.limit,
      class_names=classes.VOC_CLASSES[:config.model.num_classes])
  report["model_dir"] = os.path.abspath(FLAGS.model_dir)
  report["weak_dir"] = os.path.abspath(weak_dir)
  report_path = os.path.join(output_dir, "report.json")
  with open(report_path, "w", encoding="utf-8") as f:
    json.dump(evaluation.to_jsonable(report), f, indent=2)
    f.write("\n")
  print(f"{report['num_images']} images, t_train={t_train}, "
        f"{report['seconds']:.1f} s")
  table = evaluation.format_cleaning_report(report)
  if table:
    print(table)
  print(f"cleaned tags: {report['jsonl']}")
  print(f"labelmaps:    {report['labelmap_dir']}")
  print(f"report:       {report_path}")


if __name__ == "__main__":
  app.run(main)
