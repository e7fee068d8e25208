r"""Pseudo labels of the weak images at the start and end of stage 2.

Scores, per seed, the pseudo labels of the stage-1 model and of the final
DIS model of each `tools/ablation.py` run under four training-mode
inferences (t=0, tags only, the paper's step, the per-pixel step) against
the generator's true masks (dis_tf/research/pseudo_label_study.py says
why). For the paper's step vs the per-pixel step in training mode
(RESULTS.md's run and its `--latent.train_update=per_pixel` rerun),
about 15 minutes on 2 CPU cores for 5 seeds and 150 weak images:

  python tools/pseudo_label_study.py \
    --workdirs=runs/abl5/work,runs/abl5_pp/work --t_train=10 \
    --output=docs/results/train_update_per_pixel/PSEUDO_LABELS.md

The page's numbers go to the same path with .json; --from_json re-renders
the page from them.
"""

import os

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf.data import synthetic

FLAGS = flags.FLAGS
flags.DEFINE_list("workdirs", None, "--workdir of each tools/ablation.py "
                  "run to compare (they must share the seeds).")
flags.DEFINE_list("seeds", None, "Seeds (default: every seed_<n> folder of "
                  "the first workdir).")
flags.DEFINE_integer("t_train", 10, "The runs' DIS t_train (its "
                     "t_train_<n> folder), also the inferences' steps.")
flags.DEFINE_integer("weak_limit", 150, "Weak images per seed.")
dis_flags.define_study_page_flags("tools/pseudo_label_study.py")


def _seeds(workdir):
  if FLAGS.seeds:
    try:
      return [int(s) for s in FLAGS.seeds]
    except ValueError as e:
      raise errors.UserError(f"--seeds={','.join(FLAGS.seeds)}: {e}") from e
  if not os.path.isdir(workdir):
    raise errors.MissingFileError(f"--workdirs: {workdir} is not a "
                                  "directory.")
  seeds = sorted(int(name.split("_", 1)[1]) for name in os.listdir(workdir)
                 if name.startswith("seed_") and name[5:].isdigit())
  if not seeds:
    raise errors.UserError(f"--workdirs: {workdir} has no seed_<n> folder "
                           "of a tools/ablation.py run.")
  return seeds


def main(argv):
  del argv
  command = dis_flags.study_page_command()
  if not FLAGS.from_json:
    if not FLAGS.workdirs:
      raise errors.UserError("--workdirs is required (or --from_json).")
    seeds = _seeds(FLAGS.workdirs[0])
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf.research import pseudo_label_study
  if FLAGS.from_json:
    study, command = pseudo_label_study.load(FLAGS.from_json)
  else:
    data = (synthetic.config_overrides(FLAGS.data_root)
            if FLAGS.data_root else None)
    study = pseudo_label_study.run_study(
        FLAGS.workdirs, seeds, FLAGS.t_train, FLAGS.weak_limit, data)
  print(pseudo_label_study.write(study, FLAGS.output, command))


if __name__ == "__main__":
  errors.run(main)
