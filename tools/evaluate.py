r"""Evaluates a trained DIS model: mIoU per t_test (paper Table 3) and tags.

Example (the synthetic benchmark's 300 val images with the tiny backbone,
about 1 minute on 2 CPU cores; add ~x2 per extra flip / scale):

  python tools/evaluate.py --model_dir=runs/synthetic --split=val \
      --t_test=0,10,30 [--flip] [--scales=0.75,1,1.25]

The backbone runs once per image (per flip / scale variant) and every count
of --t_test is scored in that pass (the latent loop continues from one count
to the next). Writes to --output_dir (default MODEL_DIR/eval_SPLIT):
table3.md / table3.csv (per-class IoU, one row per setting, mIoU last),
summary.md (pixel accuracy, mIoU, tag precision / recall / F1 / mAP) and
results.json (everything, confusion matrices included).

Any field of the run's configuration can be overridden by its flag (see
--helpfull), e.g. --latent.step_size=0.2 or --data.skip_bad_files; --split
and --tag_threshold are short names of --data.eval_split and
--latent.tag_threshold.
"""

import os

from absl import app
from absl import flags
from absl import logging

from dis_tf import classes
from dis_tf import evaluation
from dis_tf import flags as dis_flags
from dis_tf import model_dir as model_dir_lib
from dis_tf import reports
from dis_tf.data import pipeline

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={
    "split": "data.eval_split", "tag_threshold": "latent.tag_threshold"})
dis_flags.define_t_test(None, "Latent step counts to score, e.g. 0,10,30 "
                        "(default config latent.t_test).")
dis_flags.define_scales("1.0", "Input scales whose upsampled probabilities "
                        "are averaged (DeepLab multi-scale testing), e.g. "
                        "0.75,1,1.25.")
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_boolean("flip", False,
                     "Average the probabilities with those of the flipped "
                     "image.")
flags.DEFINE_integer("limit", None, "Evaluate only the first N images.",
                     lower_bound=1)
flags.DEFINE_string("output_dir", None,
                    "Report folder (default MODEL_DIR/eval_SPLIT).")


def main(argv):
  config = dis_flags.run_config(argv)
  if config is None:
    return
  model = model_dir_lib.load_trained_model(FLAGS.model_dir, config)
  split = config.data.eval_split
  t_tests = FLAGS.t_test or [config.latent.t_test]
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir,
                                                f"eval_{split}")
  class_names = classes.VOC_CLASSES[:config.model.num_classes]

  dataset = pipeline.eval_dataset(config, split)
  logging.info("Evaluating %s on split %r, t_test=%s flip=%s scales=%s",
               FLAGS.model_dir, split, t_tests, FLAGS.flip, FLAGS.scales)
  results = evaluation.evaluate_model(
      model, dataset, t_tests, flip=FLAGS.flip, scales=FLAGS.scales,
      num_classes=config.model.num_classes,
      tag_threshold=config.latent.tag_threshold, limit=FLAGS.limit)
  if results["num_images"] == 0:
    raise ValueError(f"--split={split}: no images to evaluate.")
  paths = reports.write_reports(
      results, output_dir, class_names,
      extra={"model_dir": os.path.abspath(FLAGS.model_dir), "split": split})
  markdown, _ = reports.format_table3(results, class_names)
  print(f"{results['num_images']} images of split {split!r} in "
        f"{results['seconds']:.1f} s\n")
  print(markdown)
  print(reports.format_summary(results))
  for name, path in paths.items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  app.run(main)
