r"""Cleaner tags: the cleaning rule chosen on held-out weak images.

For each trained run (a model_dir of tools/train.py or tools/demo.py) runs
the paper's tag cleaning (training-mode inference, tools/clean_tags.py) on
the first --num_images weak images at each tag-term weight, chooses a
threshold, weight and rule on half of the images by the margin rule, and
scores the choice against the given tags on the other half, paired per
seed (issue 26, point 4; dis_tf/research/tag_cleaning_study.py). For the
five seed runs of bench/demo_spread.py, about 10 minutes on 2 CPU cores:

  python tools/tag_cleaning_study.py \
    --model_dirs=runs/demo_spread/seed_0,runs/demo_spread/seed_1 \
    --seeds=0,1 --output=docs/results/TAG_CLEANING.md

The weak folder needs the generator's truth (truth/truth.jsonl). The page's
numbers go to the same path with .json; --from_json re-renders the page.
"""

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 300, "Weak images cleaned per run (half "
                     "choose, half report).", lower_bound=4)
dis_flags.define_study_run_flags("tools/tag_cleaning_study.py")


def main(argv):
  del argv
  command, seeds = dis_flags.study_run_args()
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf.research import tag_cleaning_page
  from dis_tf.research import tag_cleaning_study
  print(dis_flags.study_page(
      command, tag_cleaning_page,
      lambda data: tag_cleaning_study.run_study(
          FLAGS.model_dirs, seeds, FLAGS.num_images, data_overrides=data)))


if __name__ == "__main__":
  errors.run(main)
