r"""Cleans the noisy tags of a web-tag folder with training-mode inference.

The paper's second property of DIS (Sec. 3.1): with the given tags in the
latent objective, t_train gradient steps on (u1, v1) yield cleaned tags
(sigmoid(v3) > threshold) and a labelmap for every weak image.
--rule=labelmap keeps instead the given tags whose class the network's own
plain labelmap draws (a departure: see docs/results/TAG_CLEANING.md).

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

Any field of the run's configuration can be overridden by its flag (see
--helpfull); --t_train and --tag_threshold are short names of
--latent.t_train and --latent.tag_threshold.
"""

import json
import os

from absl import flags
from absl import logging

from dis_tf import atomic
from dis_tf import classes
from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf import model_dir as model_dir_lib
from dis_tf import reports
from dis_tf.data import web_tags

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={
    "t_train": "latent.t_train", "tag_threshold": "latent.tag_threshold"})
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_string("output_dir", None,
                    "Output folder (default MODEL_DIR/clean_tags).")
flags.DEFINE_integer("limit", None, "Process only the first N images.",
                     lower_bound=1)
flags.DEFINE_enum("rule", "paper", ["paper", "labelmap"],
                  "paper: the cleaned tags are sigmoid(v3) > --tag_threshold "
                  "after the steps (Sec. 3.1). labelmap (a departure): the "
                  "given tags whose class covers more than --min_area of "
                  "the network's own plain labelmap (docs/results/"
                  "TAG_CLEANING.md).")
flags.DEFINE_float("min_area", 0.0, "--rule=labelmap: share of the plain "
                   "labelmap's pixels a given tag's class must exceed.",
                   lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_string("weak_output_dir", None,
                    "Also write a copy of the web_tags folder with the "
                    "cleaned tags (an image left with none keeps its given "
                    "tags), to train stage 2 again on: tools/train.py "
                    "--stage=semi --init_from=MODEL_DIR --weak_dir=THIS.")
flags.DEFINE_boolean("use_truth", True,
                     "Score against WEAK_DIR/truth/truth.jsonl when it "
                     "exists (synthetic benchmark).")


def main(argv):
  config = dis_flags.run_config(argv)
  if config is None:
    return
  t_train = config.latent.t_train
  if t_train < 0:
    raise errors.UserError(f"--t_train={t_train} must be >= 0.")
  weak_dir = config.data.weak_dir
  if not weak_dir:
    raise errors.UserError("--weak_dir is required (config.json has no "
                           "data.weak_dir).")
  if not os.path.isdir(weak_dir):
    raise errors.MissingFileError(f"--weak_dir={weak_dir}: no such directory.")
  if FLAGS.weak_output_dir and FLAGS.limit:
    raise errors.UserError("--weak_output_dir needs every image cleaned: drop "
                           "--limit.")
  if FLAGS.weak_output_dir and (os.path.abspath(FLAGS.weak_output_dir)
                                == os.path.abspath(weak_dir)):
    raise errors.UserError(f"--weak_output_dir={FLAGS.weak_output_dir} is "
                           "--weak_dir: the copy needs its own folder.")
  if FLAGS.weak_output_dir and os.path.exists(FLAGS.weak_output_dir):
    raise errors.UserError(f"--weak_output_dir={FLAGS.weak_output_dir} "
                           "already exists: give a new folder for the copy "
                           "with the cleaned tags.")
  # After the flags and the run's config: see dis_tf/flags.py (tools import
  # TensorFlow only once their flags are known to be good).
  from dis_tf import tag_cleaning
  from dis_tf.data import pipeline
  model = model_dir_lib.load_trained_model(FLAGS.model_dir, config)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, "clean_tags")

  truth = None
  if FLAGS.use_truth:
    try:
      truth = web_tags.load_weak_truth(weak_dir)
      logging.info("Scoring against the truth of %d images", len(truth))
    except FileNotFoundError:
      logging.info("No evaluation truth in %s: writing tags only.", weak_dir)

  dataset = pipeline.weak_eval_dataset(config)
  report = tag_cleaning.clean_tags(
      model, dataset, output_dir, t_train,
      tag_threshold=config.latent.tag_threshold, truth=truth,
      limit=FLAGS.limit,
      class_names=classes.from_config(config).names,
      palette=classes.from_config(config).palette(), rule=FLAGS.rule,
      min_area=FLAGS.min_area)
  report["model_dir"] = os.path.abspath(FLAGS.model_dir)
  report["weak_dir"] = os.path.abspath(weak_dir)
  report_path = os.path.join(output_dir, "report.json")
  atomic.write_text(report_path,
                    json.dumps(reports.to_jsonable(report), indent=2) + "\n")
  print(f"{report['num_images']} images, t_train={t_train}, rule "
        f"{FLAGS.rule}, {report['seconds']:.1f} s")
  table = tag_cleaning.format_cleaning_report(report)
  if table:
    print(table)
  print(f"cleaned tags: {report['jsonl']}")
  print(f"labelmaps:    {report['labelmap_dir']}")
  print(f"report:       {report_path}")
  if FLAGS.weak_output_dir:
    with open(report["jsonl"], encoding="utf-8") as f:
      records = [json.loads(line) for line in f]
    try:
      kept = tag_cleaning.write_cleaned_folder(
          weak_dir, FLAGS.weak_output_dir, records,
          classes.from_config(config).names)
    except ValueError as e:  # An image without cleaned tags, or the reverse.
      raise errors.UserError(f"--weak_output_dir: {e}") from e
    print(f"web_tags folder with the cleaned tags: {FLAGS.weak_output_dir} "
          f"({kept} of {len(records)} images kept their given tags: the "
          "rule left them none). Train stage 2 again on it: python "
          "tools/train.py "
          f"--stage=semi --init_from={FLAGS.model_dir} "
          f"--weak_dir={FLAGS.weak_output_dir} --model_dir=NEW_DIR")


if __name__ == "__main__":
  errors.run(main)
