r"""The paper's Table-3 ablation on the synthetic benchmark; writes RESULTS.md.

Full grid (5 seeds; baseline, setup 1, t_train 5/10/30; t_test 0/10/30),
about 80 minutes on 2 CPU cores (15 per seed), over the 60 minutes the
issue asked for: each t_train adds to every seed a stage-2 training
(1.3-2.5 min), its scoring (about 0.4 min) and its latent diagnosis
(about 1.4 min); BENCHMARKS.md "Research loop" times each part of one
seed:

  python tools/ablation.py --output=RESULTS.md

t_test and the best t_train are chosen on the preset's selection split
(`--select_split`, default val[:100]) and every reported mIoU is on
`--eval_split` (default val[100:]); each seed also runs the latent
diagnosis (dis_tf/research/diagnosis.py) on its models.

Quick mode (1 seed; t_train 10; t_test 0/10/30; 100 reported / 100 weak
images, 50 diagnosis images), about 8 minutes:

  python tools/ablation.py --quick --output=runs/ablation_quick/RESULTS.md

The page's numbers (JSON) and plot go to --results_dir (default
docs/results/ next to --output: docs/results/results.json and
docs/results/results_miou_vs_t_test.png for RESULTS.md).
--from_json=docs/results/results.json re-renders the page from a finished
run's JSON (after a change to the page's layout or text; the numbers are the
run's); with --compare_json=OTHER.json it appends the paired per-seed
differences against another run of the same seeds (one setting changed).

A killed run, restarted with the same flags and --workdir, resumes: finished
training phases are reused through their checkpoints, and each finished
seed's scores through workdir/seed_<seed>/scores.json.

Stage 1 is trained once per seed and shared by every stage-2 setting. The
benchmark is generated into --data_root if missing (an existing benchmark is
used as it is, and its generator parameters are recorded). Every number of
the output page is computed by this run (see dis_tf/research/ablation.py).
"""

import os
import sys

from absl import flags

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import flags as dis_flags
from dis_tf.data import synthetic

FLAGS = flags.FLAGS
# Where the run reads and writes.
_PATHS = {
    "data_root": ("data/synthetic",
                  "Synthetic benchmark folder (generated if missing)."),
    "workdir": ("runs/ablation", "Where models are trained."),
    "output": ("RESULTS.md", "Results page to write."),
    "results_dir": (None, "Folder of the page's JSON and plot (default: "
                    "docs/results next to --output)."),
}
for _name, (_default, _help) in _PATHS.items():
  flags.DEFINE_string(_name, _default, _help)
flags.DEFINE_boolean("quick", False,
                     "One seed, t_train 10 only, 100 val / 100 weak images.")
flags.DEFINE_list("seeds", None, "Seeds (default 0,1,2,3,4; quick: 0).")
flags.DEFINE_list("t_train", None, "DIS t_train values (default 5,10,30; "
                  "quick: 10). Setup 1 (t_train=0) is always run.")
dis_flags.define_t_test("0,10,30", "Evaluation t_test values.")
# How much of each split the plan scores; unset, the full or the quick
# plan's value (see main).
_LIMITS = {
    "eval_limit": "Images of the reported split to score (default all; "
                  "quick: 100).",
    "select_limit": "Images of the selection split to score (default all).",
    "diagnosis_images": "Selection-split images for the latent diagnosis "
                        "(default 100; quick: 50; 0 = none).",
    "weak_limit": "Weak images for pseudo labels / tags (default 150; "
                  "quick: 100).",
}
for _name, _help in _LIMITS.items():
  flags.DEFINE_integer(_name, None, _help)
flags.DEFINE_integer("steps_scale_percent", 100,
                     "Scale every phase's steps of the synthetic preset "
                     "(percent; tests use a few percent).")
# The synthetic preset's fields, except the paths (from --data_root and
# --workdir); --tiny_width, --crop_size, --select_split and --eval_split
# are kept as short names.
dis_flags.define_config_flags(
    aliases={"tiny_width": "model.tiny_width", "crop_size": "data.crop_size",
             "select_split": "data.select_split",
             "eval_split": "data.eval_split"},
    exclude=tuple(dis_flags.SHORT_NAMES))
flags.adopt_module_key_flags(dis_flags)
flags.DEFINE_string("from_json", None,
                    "Only re-render --output from a results JSON of an "
                    "earlier run (its numbers, plan and command); no "
                    "training or scoring.")


flags.DEFINE_string("compare_json", None,
                    "With --from_json: append paired per-seed differences "
                    "against this other results JSON (same seeds; e.g. the "
                    "same ablation with one setting changed).")


def _ints(values, name):
  try:
    return tuple(int(v) for v in values)
  except ValueError as e:
    raise errors.UserError(f"--{name}={','.join(values)}: {e}") from e


def main(argv):
  del argv
  if FLAGS.from_json:
    if not os.path.isfile(FLAGS.from_json):
      raise errors.MissingFileError(
          f"--from_json={FLAGS.from_json}: no such file.")
    # After the flags: see dis_tf/flags.py (tools import TensorFlow only
    # once their flags are known to be good).
    from dis_tf.research import results_page
    results, plan, command, generator_params, config = (
        results_page.load_results(FLAGS.from_json))
    compare = None
    if FLAGS.compare_json:
      if not os.path.isfile(FLAGS.compare_json):
        raise errors.MissingFileError(
            f"--compare_json={FLAGS.compare_json}: no such file.")
      other, other_plan, *_ = results_page.load_results(FLAGS.compare_json)
      compare = (FLAGS.compare_json, other, other_plan)
    print(results_page.write_results(
        results, plan, FLAGS.output, command, generator_params,
        rendered_by="python " + " ".join(sys.argv), config=config,
        results_dir=FLAGS.results_dir, compare=compare))
    return
  if FLAGS.compare_json:
    raise errors.UserError("--compare_json needs --from_json (it compares "
                           "two finished runs).")
  from dis_tf.data import pipeline
  from dis_tf.research import ablation
  from dis_tf.research import results_page
  quick = FLAGS.quick
  plan = ablation.AblationPlan(
      seeds=_ints(FLAGS.seeds or (["0"] if quick else
                                  ["0", "1", "2", "3", "4"]), "seeds"),
      t_trains=_ints(FLAGS.t_train or (["10"] if quick else ["5", "10", "30"]),
                     "t_train"),
      t_tests=tuple(FLAGS.t_test),
      eval_limit=FLAGS.eval_limit or (100 if quick else None),
      select_limit=FLAGS.select_limit,
      weak_limit=FLAGS.weak_limit or (100 if quick else 150),
      diagnosis_images=(FLAGS.diagnosis_images
                        if FLAGS.diagnosis_images is not None
                        else 50 if quick else 100),
  )
  config = config_lib.resolve_config("synthetic", dict(
      dis_flags.config_overrides(),
      **synthetic.config_overrides(FLAGS.data_root)))
  scale = FLAGS.steps_scale_percent / 100.0
  for key in ("phase_a_steps", "phase_b_steps", "phase_c_steps", "semi_steps"):
    setattr(config.train, key,
            max(1, int(round(getattr(config.train, key) * scale))))
  config.train.steps_per_epoch = max(
      1, min(config.train.steps_per_epoch, config.train.semi_steps))
  if dis_flags.print_config_and_exit(config):
    return
  generator_params = synthetic.use_or_generate(FLAGS.data_root)["params"]

  pipeline.prepare_datasets(config)

  results = []
  for seed in plan.seeds:
    results.append(ablation.run_seed(config, FLAGS.workdir, seed, plan))
  command = "python " + " ".join(sys.argv)
  page = results_page.write_results(results, plan, FLAGS.output, command,
                                generator_params, config=config.to_dict(),
                                results_dir=FLAGS.results_dir)
  print(page)


if __name__ == "__main__":
  errors.run(main)
