r"""Clean, retrain, clean again: the labelmap rule's cleaned tags fed back
into stage 2, measured (issue 26; dis_tf/research/iterated_cleaning_study.py).

For each trained run (a model_dir of tools/train.py or tools/demo.py on the
synthetic benchmark, whose web_tags folder keeps the true tags and masks),
cleans the weak pool with the run's plain labelmap, trains stage 2 again
from the run's stage-1 weights on the given and on the cleaned tags, and
cleans again with the second model; paired per seed. Two stage-2 trainings
per seed:

  python tools/iterated_cleaning_study.py \
    --model_dirs=runs/demo_spread/seed_0,runs/demo_spread/seed_1 \
    --seeds=0,1 --workdir=/tmp/iterated \
    --output=docs/results/ITERATED_CLEANING.md

A killed run resumes: each finished seed is kept in
--workdir/seed_<s>/result.json. The page's numbers go to the same path
with .json; --from_json re-renders the page from them.
"""

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Folder of the weak-folder copies and "
                    "the retrained runs (required unless --from_json).")
flags.DEFINE_float("min_area", 0.0, "Share of the plain labelmap's pixels a "
                   "given tag's class must exceed to stay.", lower_bound=0.0,
                   upper_bound=0.999)
flags.DEFINE_integer("pseudo_images", 300, "Weak images whose stage-1 pseudo "
                     "labels are scored (the mechanism).", lower_bound=1)
dis_flags.define_study_run_flags("tools/iterated_cleaning_study.py")


def main(argv):
  del argv
  command, seeds = dis_flags.study_run_args()
  if not FLAGS.from_json and not FLAGS.workdir:
    raise errors.UserError("--workdir is required (or --from_json).")
  for seed in seeds or []:
    if not seed.lstrip("-").isdigit():
      raise errors.UserError(f"--seeds: {seed!r} is not an integer.")
  # After the flags: see dis_tf/flags.py.
  from dis_tf.research import iterated_cleaning_study as study
  print(dis_flags.study_page(
      command, study,
      lambda data: study.run_study(FLAGS.model_dirs, seeds, FLAGS.workdir,
                                   FLAGS.min_area, FLAGS.pseudo_images,
                                   data)))


if __name__ == "__main__":
  errors.run(main)
