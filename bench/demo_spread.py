"""The demo's result across training seeds: how far one number can be read.

  python bench/demo_spread.py [--seeds=0,1,2,3,4] [--data_root=data/synthetic]
      [--workdir=runs/demo_spread] [--precision=float32]

Issue 26, point 5: the demo prints one mIoU; a change to the code can only
be told from noise against the spread of that number over training seeds.
For every seed (`train.seed`; the benchmark is the demo's, generated once
with seed 0) the demo's training (`tools/demo.py` step 3: the `synthetic`
preset with `data.deterministic`, through `tools/train.py`) is run, and the
demo's step 4 (`tools/evaluate.py --select_t_test`: the served setting
chosen on val[:100], every t_test scored on val[100:]) scores it. Seed 0
under the precision the demo's --precision=auto resolves to on the machine
is the demo's own run, so its row must equal the demo's printed numbers.

The section gives each seed's mIoU at every t_test and at the served
setting, their mean and sample sd (ddof=1), the target (sd <= 3 mIoU at
t = 0) computed from them, and the classes whose IoU moves most across
seeds: where the spread comes from.

--precision=mixed_bfloat16 trains and scores the same seeds under bf16
(issue 29, point 3) in a section of its own; `bench/precision_training.py`
pairs the two workdirs.

A finished run (its `eval_report/results.json`) is kept and reused, only if
its phases were trained with the settings asked for (their fingerprints).

--train_flag=KEY=VALUE (repeatable) trains a variant of the demo's training
(e.g. train.weight_decay=0.05) into its own --workdir and writes the section
`demo_spread_<--name>`: the variant's spread beside the demo's, and the
variant minus the demo paired per seed on both splits (the demo's runs are
read from --baseline_workdir). A variant is measured, never taken: the
section says whether it would meet the spread target and how it moves the
mean on the selection split, from which a change of the preset would be
decided.
"""

import argparse
import json
import os
import sys

import numpy as np

import common  # Puts the checkout on sys.path.

from dis_tf.research import tables

EVAL_SPLIT = "val[100:]"
SD_TARGET = 3.0  # Points of mIoU at t = 0 (issue 26).


def parse_train_flag(text):
  """("section.name", value) of a --train_flag KEY=VALUE; the value is read
  as JSON (0.05, 3000, true) and kept as text otherwise."""
  key, sep, value = text.partition("=")
  if not sep or "." not in key:
    raise SystemExit(f"--train_flag={text!r}: expected KEY=VALUE with a "
                     "dotted config key, e.g. train.weight_decay=0.05.")
  try:
    return key, json.loads(value)
  except ValueError:
    return key, value


def check_reused_run(model_dir, seed, precision, overrides):
  """Refuses a finished run in `model_dir` whose phases were trained with
  other settings than the `synthetic` preset with `overrides` (a workdir of
  another variant given by mistake would be scored as this one)."""
  from dis_tf import config as config_lib
  from dis_tf import model_dir as model_dir_lib
  expected = config_lib.resolve_config("synthetic", {
      "train.seed": seed, "model.precision": precision, **overrides})
  for phase in ("a", "b", "c", "semi"):
    stored = model_dir_lib.read_fingerprint(model_dir, phase)
    if stored is None:
      continue
    differences = model_dir_lib.field_differences(
        stored["fields"], model_dir_lib.training_fields(expected, phase))
    if differences:
      raise SystemExit(
          f"{model_dir}: phase {phase} was trained with "
          + ", ".join(f"{k}={a!r} (asked: {b!r})" for k, a, b in differences)
          + "; give a --workdir of its own to each variant.")


def train_and_score(data_root, model_dir, seed, t_tests,
                    precision="float32", overrides=None):
  """Trains (unless finished) and runs the demo's step 4 on one seed.

  Returns:
    {"train_seconds", "miou": {t: mIoU}, "per_class": {t: [IoU]},
    "served": {"t_test", "refinement", "update", "miou"}, "select_t0": the
    plain prediction's (t = 0, refinement off) mIoU on the selection split,
    "commit": the code version that trained stage 2}.
  """
  overrides = dict(overrides or {})
  check_reused_run(model_dir, seed, precision, overrides)
  paths = common.synthetic_paths(data_root)
  flags = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}"
           for k, v in overrides.items()]
  seconds = common.train_once(data_root, model_dir, seed,
                              "--data.deterministic=true",
                              f"--model.precision={precision}", *flags)
  check_reused_run(model_dir, seed, precision, overrides)
  out = os.path.join(model_dir, "eval_report")
  if not os.path.exists(os.path.join(out, "results.json")):
    common.run_python(
        ["tools/evaluate.py", f"--model_dir={model_dir}", *paths,
         "--select_t_test", f"--split={EVAL_SPLIT}",
         f"--t_test={','.join(map(str, t_tests))}", f"--output_dir={out}"],
        os.path.join(model_dir, "evaluate.log"))
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  with open(os.path.join(model_dir, "t_test_selection.json")) as f:
    chosen = json.load(f)
  # evaluate --select_t_test scores the served refinement first.
  first = results["settings"][0]["refinement"]
  settings = [s for s in results["settings"] if s["refinement"] == first]
  miou = {s["t_test"]: s["mean_iou"] for s in settings}
  per_class = {s["t_test"]: s["per_class_iou"] for s in settings}
  # t = 0 without refinement is the same prediction under every update.
  plain = next(v["0"] for k, v in chosen["scores"].items()
               if k.startswith("off,"))
  from dis_tf import model_dir as model_dir_lib
  version = (model_dir_lib.read_fingerprint(model_dir, "semi")
             or {}).get("code_version") or {}
  return {"train_seconds": seconds, "miou": miou, "per_class": per_class,
          "served": {"t_test": chosen["t_test"],
                     "refinement": chosen["refinement"],
                     "update": chosen.get("update"),
                     "miou": miou.get(chosen["t_test"], float("nan"))},
          "select_t0": plain,
          "commit": (version.get("commit") or "unknown")[:7]
          + ("+dirty" if version.get("dirty") else "")}


# A variant counts as no worse when the lower end of the 90% t interval of
# its paired mean difference on the selection split is above this (points;
# the served-labelmap issue's margin).
NO_WORSE = -0.5


def variant_body(args, seeds, overrides, runs, base):
  """The section of a --train_flag variant: its t = 0 spread beside the
  demo's, and variant minus demo paired per seed on both splits; every
  sentence is computed from these numbers."""
  reported = [[100 * r["miou"][0] for r in rs] for rs in (base, runs)]
  selected = [[100 * r["select_t0"] for r in rs] for rs in (base, runs)]
  rows = [[seed, f"{b:.1f}", f"{v:.1f}", f"{bs:.1f}", f"{vs:.1f}",
           f"{r['train_seconds']:.0f}", f"{rb['commit']} / {r['commit']}"]
          for seed, b, v, bs, vs, rb, r in zip(seeds, *reported, *selected,
                                                base, runs)]
  (base_mean, base_sd), (var_mean, var_sd) = map(tables.mean_std, reported)
  on_select = tables.paired_stats(np.array(selected[1]) / 100,
                                  np.array(selected[0]) / 100)
  on_report = tables.paired_stats(np.array(reported[1]) / 100,
                                  np.array(reported[0]) / 100)
  flags = ", ".join(f"`{k}={v}`" for k, v in overrides.items())
  # The classes that move most across the demo's seeds, per seed in both:
  # does the variant change which seeds fail them?
  from dis_tf import classes
  ious = [np.array([[np.nan if v is None else 100 * v
                     for v in r["per_class"][0]] for r in rs])
          for rs in (base, runs)]
  movers = np.argsort(-np.nan_to_num(np.nanstd(ious[0], axis=0, ddof=1)))
  class_rows = [[classes.VOC.names[i]]
                + [f"{b:.0f} / {v:.0f}" for b, v in zip(ious[0][:, i],
                                                        ious[1][:, i])]
                for i in movers[:5]]
  meets = len(seeds) >= 2 and var_sd <= SD_TARGET
  low = on_select["low"]
  if low > 0:
    on_mean = (f"better on the selection split (the interval's lower end "
               f"{low:+.1f} is above 0)")
  elif low > NO_WORSE:
    on_mean = (f"no worse on the selection split (the interval's lower end "
               f"{low:+.1f} is above {NO_WORSE})")
  else:
    on_mean = (f"not shown no worse on the selection split (the "
               f"interval's lower end {low:+.1f} is not above {NO_WORSE})")
  if meets and low > NO_WORSE:
    reading = (f"The variant meets the spread target and is {on_mean}: a "
               "candidate for the preset, which every results page would "
               "then be re-measured with.")
  elif meets:
    reading = (f"The variant meets the spread target but is {on_mean}: a "
               "narrower spread bought with a possible loss of mIoU.")
  else:
    reading = (f"The variant does not bring the spread to "
               f"{SD_TARGET:.0f} (sd {var_sd:.1f} against the demo's "
               f"{base_sd:.1f}); it is {on_mean}.")
  lowest = int(np.argmin(reported[0]))
  changes = np.array(reported[1]) - np.array(reported[0])
  others = np.delete(changes, lowest)
  if others.size:
    reading += (f" The demo's lowest seed ({seeds[lowest]}) moves by "
                f"{changes[lowest]:+.1f} mIoU on `{EVAL_SPLIT}` under the "
                f"variant, the other seeds by {others.mean():+.1f} on "
                "average.")
  return "\n".join([
      f"The demo's training (`synthetic` preset, `data.deterministic`, "
      f"`model.precision={args.precision}`) with {flags}, seeds {seeds}, "
      f"in `{args.workdir}`; the demo's own runs of the same seeds in "
      f"`{args.baseline_workdir}`. mIoU of the plain prediction (t = 0, "
      f"refinement off) on the selection split (val[:100]) and on "
      f"`{EVAL_SPLIT}`; the commits are the code that trained stage 2 of the "
      "demo's run / the variant's.",
      "",
      common.table(["seed", f"demo {EVAL_SPLIT}", f"variant {EVAL_SPLIT}",
                    "demo val[:100]", "variant val[:100]",
                    "variant training (s)", "commits"], rows),
      "",
      f"- Spread at t = 0 on `{EVAL_SPLIT}` over {len(seeds)} seeds: the "
      f"demo {base_mean:.1f} (sample sd {base_sd:.1f}), the variant "
      f"{var_mean:.1f} (sample sd {var_sd:.1f}); target sd <= "
      f"{SD_TARGET:.0f} for the variant: "
      f"**{'met' if meets else 'not met'}**.",
      f"- Variant minus demo at t = 0, paired per seed: on the selection "
      f"split {tables.paired_text(on_select, per_seed=True)}; on "
      f"`{EVAL_SPLIT}` {tables.paired_text(on_report, per_seed=True)}.",
      f"- {reading}",
      "",
      f"IoU at t = 0 on `{EVAL_SPLIT}`, demo / variant, of the 5 classes "
      "whose IoU moves most across the demo's seeds:",
      "",
      common.table(["class"] + [f"seed {s}" for s in seeds], class_rows),
  ])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--t_test", default="0,10,30")
  parser.add_argument("--data_root", default="data/synthetic")
  parser.add_argument("--workdir", default="runs/demo_spread")
  parser.add_argument("--precision", default="float32",
                      help="model.precision of the trainings.")
  parser.add_argument("--train_flag", action="append", default=[],
                      help="KEY=VALUE config override of a variant's "
                      "trainings (repeatable); needs --name and "
                      "--baseline_workdir.")
  parser.add_argument("--name", default=None,
                      help="A variant's name: its section is "
                      "demo_spread_<name>.")
  parser.add_argument("--baseline_workdir", default=None,
                      help="The workdir of the demo's own runs (same seeds "
                      "and precision) that a variant is paired with.")
  args = parser.parse_args()
  overrides = dict(parse_train_flag(f) for f in args.train_flag)
  if overrides and not (args.name and args.baseline_workdir):
    raise SystemExit("--train_flag needs --name (the section) and "
                     "--baseline_workdir (the demo's runs to pair with).")
  if (args.name or args.baseline_workdir) and not overrides:
    raise SystemExit("--name and --baseline_workdir go with --train_flag.")
  if overrides and os.path.abspath(args.workdir) == os.path.abspath(
      args.baseline_workdir):
    raise SystemExit("--workdir and --baseline_workdir are the same folder: "
                     "a variant trains into a folder of its own.")
  seeds = [int(s) for s in args.seeds.split(",")]
  t_tests = [int(t) for t in args.t_test.split(",")]
  data_root = os.path.abspath(args.data_root)

  from dis_tf import classes
  from dis_tf.data import synthetic
  common.prepare_synthetic(data_root)

  runs = []
  for seed in seeds:
    model_dir = os.path.abspath(os.path.join(args.workdir, f"seed_{seed}"))
    runs.append(train_and_score(data_root, model_dir, seed, t_tests,
                                args.precision, overrides))
    print(f"seed {seed}: {runs[-1]['miou']} served {runs[-1]['served']}",
          flush=True)
  if overrides:
    base = [train_and_score(
        data_root, os.path.abspath(os.path.join(args.baseline_workdir,
                                                f"seed_{seed}")),
        seed, t_tests, args.precision) for seed in seeds]
    common.emit(f"demo_spread_{args.name}",
                f"The demo's spread under a variant of its training: "
                f"{args.name} (issue 26)",
                "python bench/demo_spread.py " + " ".join(sys.argv[1:]),
                variant_body(args, seeds, overrides, runs, base))
    return

  rows = []
  for seed, r in zip(seeds, runs):
    s = r["served"]
    rows.append([seed] + [f"{100 * r['miou'][t]:.1f}" for t in t_tests]
                + [f"t={s['t_test']}, {s['refinement']}, {s['update']}",
                   f"{100 * s['miou']:.1f}", f"{r['train_seconds']:.0f}"])
  spread = {t: tables.mean_std([100 * r["miou"][t] for r in runs])
            for t in t_tests}
  served = tables.mean_std([100 * r["served"]["miou"] for r in runs])
  rows.append(["mean (sd)"] + [f"{m:.1f} ({sd:.1f})"
                               for m, sd in spread.values()]
              + ["", f"{served[0]:.1f} ({served[1]:.1f})", ""])
  # Where the spread comes from: the classes whose IoU moves most.
  names = classes.VOC.names
  per_class = np.array([[np.nan if v is None else 100 * v
                         for v in r["per_class"][t_tests[0]]] for r in runs])
  class_sd = np.nanstd(per_class, axis=0, ddof=1)
  order = [int(i) for i in np.argsort(-np.nan_to_num(class_sd))[:5]]
  # The generator draws class c and c +- 10 in one base colour
  # (`synthetic.class_hue_index`): such a pair differs only in shape and
  # texture, the hardest pairs to tell apart.
  def partner(i):
    same = [j for j in range(1, len(names)) if j != i and i > 0
            and synthetic.class_hue_index(j) == synthetic.class_hue_index(i)]
    return f", same colour as {names[same[0]]}" if same else ""
  movers = "; ".join(
      f"{names[i]} sd {class_sd[i]:.1f} ("
      + ", ".join(f"{v:.0f}" for v in per_class[:, i]) + partner(i) + ")"
      for i in order)
  paired_movers = sum(1 for i in order if any(
      synthetic.class_hue_index(i) == synthetic.class_hue_index(j)
      for j in order if j != i and i > 0 and j > 0))
  low = [(seed, 100 * r["miou"][t_tests[0]]) for seed, r in zip(seeds, runs)]
  sd0 = spread[t_tests[0]][1]
  met = len(seeds) >= 2 and sd0 <= SD_TARGET
  body = "\n".join([
      f"Seeds {seeds} of `train.seed`; the demo's benchmark in "
      f"`{args.data_root}` (generated with seed 0), its training "
      f"(`synthetic` preset, `data.deterministic`, `model.precision="
      f"{args.precision}`) and its step 4 (served "
      f"setting chosen on val[:100]); mIoU on `{EVAL_SPLIT}` at the served "
      "refinement.",
      "",
      common.table(["seed"] + [f"t={t}" for t in t_tests]
                   + ["served setting", "served mIoU", "training (s)"], rows),
      "",
      f"- The demo's spread at t = {t_tests[0]}: sample sd {sd0:.1f} mIoU "
      f"over {len(seeds)} seeds (range {min(v for _, v in low):.1f} to "
      f"{max(v for _, v in low):.1f}); target sd <= {SD_TARGET:.0f}: "
      f"**{'met' if met else 'not met'}**.",
      f"- The classes whose IoU at t = {t_tests[0]} moves most across the "
      f"seeds (sample sd; per seed): {movers}. {paired_movers} of these "
      f"{len(order)} classes share their colour with another of them"
      + (": the classes that move are same-colour pairs, which differ only "
         "in shape and texture." if paired_movers >= len(order) // 2 + 1
         else "; the others' same-colour partner moves less."),
  ])
  bf16 = args.precision != "float32"
  common.emit("demo_spread" + (f"_{args.precision}" if bf16 else ""),
              "The demo's mIoU across training seeds"
              + (f" under {args.precision} (issue 29)" if bf16
                 else " (issue 26)"),
              "python bench/demo_spread.py " + " ".join(sys.argv[1:]), body)


if __name__ == "__main__":
  main()
