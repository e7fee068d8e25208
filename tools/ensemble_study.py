r"""Ensembles of a t_train pair and of training seeds, measured.

From the models of a finished tools/ablation.py run (its --workdir), scores
two kinds of ensembles, each against its best member (chosen on the
selection split) and the mean of its members, paired on the reported split
(issue 26, point 4; dis_tf/research/ensemble_study.py): two t_train values
of one seed (--pair, default 10 and 30), and one t_train trained from
--members consecutive training seeds. For the five seeds of the RESULTS.md
run, about 10 minutes on 2 CPU cores:

  python tools/ensemble_study.py --workdir=runs/ablation \
    --output=docs/results/ENSEMBLE.md

The page's numbers go to the same path with .json; --from_json re-renders
the page from them.
"""

from absl import flags

from dis_tf import errors
from dis_tf import flags as dis_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The --workdir of a finished "
                    "tools/ablation.py run.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "The run's seeds to "
                  "use.")
flags.DEFINE_list("pair", ["10", "30"], "The two t_train values of the "
                  "one-seed ensembles.")
flags.DEFINE_integer("members", 3, "Training seeds per seed ensemble.",
                     lower_bound=2)
dis_flags.define_study_page_flags("tools/ensemble_study.py")


def _ints(name, values):
  try:
    return [int(v) for v in values]
  except ValueError as e:
    raise errors.UserError(f"--{name}={','.join(values)}: integers "
                           "expected.") from e


def main(argv):
  del argv
  command = dis_flags.study_page_command()
  seeds, pair = _ints("seeds", FLAGS.seeds), _ints("pair", FLAGS.pair)
  if not FLAGS.from_json:
    if not FLAGS.workdir:
      raise errors.UserError("--workdir is required (or --from_json).")
    if len(set(pair)) != 2:
      raise errors.UserError(f"--pair={','.join(FLAGS.pair)}: two different "
                             "t_train values expected.")
    if not 2 <= FLAGS.members <= len(seeds):
      raise errors.UserError(f"--members={FLAGS.members}: between 2 and the "
                             f"number of --seeds ({len(seeds)}).")
  # After the flags: see dis_tf/flags.py (tools import TensorFlow only once
  # their flags are known to be good).
  from dis_tf.research import ensemble_page
  from dis_tf.research import ensemble_study
  print(dis_flags.study_page(
      command, ensemble_page,
      lambda data: ensemble_study.run_study(FLAGS.workdir, seeds, pair,
                                            FLAGS.members, data)))


if __name__ == "__main__":
  errors.run(main)
