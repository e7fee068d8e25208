r"""Ranks unlabelled (or tag-only) images for pixel labelling.

  python tools/rank_unlabelled.py --model_dir=runs/demo/model \
      --images=data/unlabelled/ --output=ranking.csv [--top=50]
  python tools/rank_unlabelled.py --saved_model=runs/demo/export/1 \
      --images='pool/*.jpg' --output=ranking.csv

Segments every image (as tools/predict.py does, without writing labelmaps)
and writes --output, a CSV of `rank,file,quality` with the least trusted
labelmap first: the images the model segments worst are the ones to label
next (uncertainty sampling on the served quality score, `dis_tf/quality.py`;
docs/SERVING.md "Quality score"). The score is the one fitted when the run's
t_test was selected (`tools/evaluate.py --select_t_test`, or the demo); a
run without that fit ranks by the mean max-softmax probability.
--images, --t_test, --batch_size and --on_error are predict's. Ties keep
the input order. What labelling by this ranking gained against labelling at
random is measured in docs/results/LABELLING.md (stage 1 trained again from
scratch: not resolved from its run-to-run noise) and
docs/results/LABELLING_FINETUNE.md (phase c trained again from the run's
phase-b weights with the new masks, as when you continue training).
"""

import csv
import io

from absl import flags

from dis_tf import atomic
from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf import model_dir as model_dir_lib
from dis_tf import prediction_io

FLAGS = flags.FLAGS

dis_flags.define_config_flags(aliases={"t_test": "latent.t_test"})
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_string("saved_model", None,
                    "An exported SavedModel version directory (e.g. "
                    "export/1), instead of --model_dir.")
flags.DEFINE_list("images", None,
                  "Image files, folders and glob patterns, comma-separated.")
flags.DEFINE_string("output", None,
                    "The ranking CSV (rank,file,quality), least trusted "
                    "first.")
flags.DEFINE_integer("top", 10, "Ranked images to print.", lower_bound=0)
flags.DEFINE_integer("batch_size", 4, "Images per model call.",
                     lower_bound=1)
flags.DEFINE_enum("on_error", "skip", list(prediction_io.ON_ERROR),
                  "A bad input: skip it (named in the log) or stop.")
flags.DEFINE_boolean("progress", True, "Show a progress bar on stderr.")


def ranking_csv(ranking):
  """The CSV text of [(file, quality)]: a header, then one row per image."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["rank", "file", "quality"])
  for rank, (path, quality) in enumerate(ranking, 1):
    writer.writerow([rank, path, f"{quality:.6f}"])
  return out.getvalue()


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"Unexpected arguments: {argv[1:]}.")
  dis_flags.check_model_source(FLAGS.model_dir, FLAGS.saved_model,
                               FLAGS.images)
  if not FLAGS.output:
    raise errors.UserError("--output is required (the ranking CSV).")
  overrides = dis_flags.config_overrides()
  t_test = overrides.pop("latent.t_test", None)
  overrides.pop("model_dir", None)
  if FLAGS.model_dir and dis_flags.print_config_and_exit(
      model_dir_lib.load_config(FLAGS.model_dir, overrides)):
    return
  # After the flags: see dis_tf/flags.py.
  from dis_tf import segmenter as segmenter_lib
  segmenter = segmenter_lib.load_segmenter(
      FLAGS.model_dir or FLAGS.saved_model, overrides=overrides)
  result = segmenter_lib.rank_files(
      segmenter, FLAGS.images, t_test=t_test, batch_size=FLAGS.batch_size,
      on_error=FLAGS.on_error, progress=FLAGS.progress)
  ranking = result["ranking"]
  atomic.write_text(FLAGS.output, ranking_csv(ranking))
  for rank, (path, quality) in enumerate(ranking[:FLAGS.top], 1):
    print(f"{rank}. {path}: quality {quality:.3f}")
  for problem in result["skipped"]:
    print(f"skipped: {errors.message(problem)}")
  print(f"{len(ranking)} images ranked, {len(result['skipped'])} skipped; "
        f"t_test={segmenter.check_t_test(t_test)}; ranking: {FLAGS.output}")


if __name__ == "__main__":
  errors.run(main)
