r"""Evaluates a trained DIS model: mIoU per t_test (paper Table 3) and tags.

Example (the synthetic benchmark's 300 val images with the tiny backbone,
about 1 minute on 2 CPU cores; add ~x2 per extra flip / scale):

  python tools/evaluate.py --model_dir=runs/synthetic --split=val \
      --t_test=0,10,30 [--flip] [--scales=0.75,1,1.25]

The backbone runs once per image (per flip / scale variant) and every count
of --t_test is scored in that pass (the latent loop continues from one count
to the next). Images are fitted into the data.eval_crop_size canvas as the
export serves them (dis_tf.image_ops.fit_to_canvas). With --select_t_test,
the setting served by default (t_test, the tag refinement and the latent
update of the steps) is first chosen on the held-out --select_split
(default config.data.select_split: val[:100] of the synthetic preset) by
the margin rule of dis_tf/selection.py, and stored in MODEL_DIR/config.json
(latent.t_test, latent.tag_refinement, latent.update; the export reads
them) with the scores and the
bootstrap interval behind it in MODEL_DIR/t_test_selection.json.
--refinements=off,paper scores several final predictions side by side.
Writes to --output_dir
(default MODEL_DIR/eval_SPLIT):
table3.md / table3.csv (per-class IoU, one row per setting, mIoU last),
summary.md (pixel accuracy, mIoU, tag precision / recall / F1 / mAP) and
results.json (everything, confusion matrices included). The mIoU and pixel
accuracy of each t_test also go to TensorBoard (tags eval/miou and
eval/pixel_accuracy, step = t_test) in MODEL_DIR/logs/eval/SPLIT.

Any field of the run's configuration can be overridden by its flag (see
--helpfull), e.g. --latent.step_size=0.2 or --data.skip_bad_files; --split
and --tag_threshold are short names of --data.eval_split and
--latent.tag_threshold; --select_split of --data.select_split.
"""

import os

from absl import flags
from absl import logging

from dis_tf import classes
from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf import reports

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={
    "split": "data.eval_split", "tag_threshold": "latent.tag_threshold",
    "select_split": "data.select_split"})
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
flags.DEFINE_boolean("select_t_test", False,
                     "Choose the served setting (t_test among --t_test and 0, "
                     "the tag refinement: off, paper, bias=2, bias=4, and "
                     "the latent update: u1, both, per_pixel) on "
                     "--select_split by the margin rule of "
                     "dis_tf/selection.py, and store it in "
                     "MODEL_DIR/config.json before evaluating.")
flags.DEFINE_list("refinements", None,
                  "Final predictions to score: off, paper or bias=<b> "
                  "(default: the model's own, latent.tag_refinement).")
flags.DEFINE_string("output_dir", None,
                    "Report folder (default MODEL_DIR/eval_SPLIT).")


def _refinements(names):
  """--refinements as `tag_refinement` values (None: the model's own)."""
  if not names:
    return None
  from dis_tf import evaluation  # After the flags: see dis_tf/flags.py.
  try:
    return [evaluation.parse_refinement(name) for name in names]
  except ValueError as e:
    raise errors.UserError(f"--refinements={','.join(names)}: {e}") from e


def main(argv):
  run = dis_flags.load_run(argv)
  if run is None:
    return
  # After the flags and the run's config: see dis_tf/flags.py (tools import
  # TensorFlow only once their flags are known to be good).
  from dis_tf import evaluation
  from dis_tf import quality
  from dis_tf import selection
  from dis_tf.data import pipeline
  config, model, split, t_tests = run
  if FLAGS.select_t_test:
    select_split = config.data.select_split
    if not select_split:
      raise errors.UserError("--select_t_test needs --select_split (the "
                             "config has no data.select_split).")
    pipeline.check_disjoint(config, select_split, split)
    decision, count = selection.select_setting(
        model, pipeline.eval_dataset(config, select_split), t_tests,
        config.model.num_classes, batch_size=config.data.eval_batch_size)
    # The stored config keeps its own values (data paths given as flags
    # here are not baked in); only the served setting changes.
    stored = config_lib.ExperimentConfig.load(FLAGS.model_dir)
    stored.model_dir = FLAGS.model_dir
    selection.record_selection(stored, decision, select_split, count)
    selection.apply(model, decision)
    print(selection.describe(decision, select_split, count))
    quality_fit = quality.fit(
        model, pipeline.eval_dataset(config, select_split),
        decision["t_test"], config.model.num_classes, select_split)
    quality.record(stored, quality_fit)
    print(f"Quality score served: {quality.describe(quality_fit)}.")
  # "val[100:]" -> eval_val_100__ (no brackets or colons in folder names).
  output_dir = FLAGS.output_dir or os.path.join(
      FLAGS.model_dir, "eval_" + dis_flags.split_file_name(split))
  class_names = classes.from_config(config).names

  dataset = pipeline.eval_dataset(config, split)
  logging.info("Evaluating %s on split %r, t_test=%s flip=%s scales=%s",
               FLAGS.model_dir, split, t_tests, FLAGS.flip, FLAGS.scales)
  results = evaluation.evaluate_model(
      model, dataset, t_tests, flip=FLAGS.flip, scales=FLAGS.scales,
      num_classes=config.model.num_classes,
      tag_threshold=config.latent.tag_threshold, limit=FLAGS.limit,
      refinements=_refinements(FLAGS.refinements),
      batch_size=config.data.eval_batch_size)
  if results["num_images"] == 0:
    raise errors.UserError(f"--split={split}: no images to evaluate.")
  paths = reports.write_reports(
      results, output_dir, class_names,
      extra={"model_dir": os.path.abspath(FLAGS.model_dir), "split": split})
  paths["tensorboard"] = evaluation.write_summaries(
      results, evaluation.summary_dir(FLAGS.model_dir, split, FLAGS.flip,
                                      FLAGS.scales))
  markdown, _ = reports.format_table3(results, class_names)
  print(f"{results['num_images']} images of split {split!r} in "
        f"{results['seconds']:.1f} s\n")
  print(markdown)
  print(reports.format_summary(results))
  for name, path in paths.items():
    print(f"{name}: {path}")


if __name__ == "__main__":
  errors.run(main)
