r"""Which images to label next: labelling by the quality ranking against
labelling at random, measured (issue 28).

For each trained run (a model_dir of tools/train.py or tools/demo.py on the
synthetic benchmark, whose web_tags folder keeps the true masks), ranks the
weak images with the run's stage-1 model by the served quality score, gives
the k least trusted and, as the control, k random images their true masks,
trains stage 1 again with each set and scores both, paired per seed
(dis_tf/research/labelling_study.py). Two stage-1 trainings per seed:
measured, 23.5 minutes for the five runs of docs/results/LABELLING.md (about
4.7 minutes a seed) on 2 CPU cores shared with another training job:

  python tools/labelling_study.py \
    --model_dirs=runs/demo_spread/seed_0,runs/demo_spread/seed_1 \
    --seeds=0,1 --workdir=/tmp/labelling --output=docs/results/LABELLING.md

--start=phase_b trains only phase c again in each arm, from the run's own
phase-b weights: a fine-tune that keeps the arms' shared start, one
phase-c training per arm instead of a whole stage 1.

A killed run resumes: each finished seed is kept in
--workdir/seed_<s>/result.json. The page's numbers go to the same path
with .json; --from_json re-renders the page from them.
"""


from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("k", 50, "Images to label in each arm.", lower_bound=1)
flags.DEFINE_string("workdir", None, "Folder of the VOC copies and the "
                    "retrained runs (required unless --from_json).")
flags.DEFINE_enum("start", "scratch", ["scratch", "phase_b"],
                  "scratch: each arm trains stage 1 (phases a, b, c) from "
                  "scratch. phase_b: each arm trains phase c again from the "
                  "run's own phase-b weights (a fine-tune; both arms start "
                  "from the same weights).")
dis_flags.define_study_run_flags("tools/labelling_study.py")


def main(argv):
  del argv
  command, seeds = dis_flags.study_run_args()
  if not FLAGS.from_json:
    if not FLAGS.workdir:
      raise errors.UserError("--workdir is required (or --from_json).")
    for seed in seeds:
      if not seed.lstrip("-").isdigit():
        raise errors.UserError(f"--seeds: {seed!r} is not an integer.")
  # After the flags: see dis_tf/flags.py.
  from dis_tf.research import labelling_study
  print(dis_flags.study_page(
      command, labelling_study,
      lambda data: labelling_study.run_study(FLAGS.model_dirs, seeds, FLAGS.k,
                                             FLAGS.workdir, data,
                                             FLAGS.start)))


if __name__ == "__main__":
  errors.run(main)
