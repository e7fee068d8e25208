"""RESULTS.md from the ablation's numbers: tables, targets and the page.

`write_results` renders the page of a `dis_tf.research.ablation` run (or of
its JSON, `tools/ablation.py --from_json`); the prose sections whose every
sentence is computed from the numbers are in
`dis_tf.research.page_sections`, the targets in
`dis_tf.research.table3_targets`. No number on the page is typed by hand.
"""

import dataclasses
import json
import os

from absl import logging
import numpy as np

from dis_tf import atomic
from dis_tf import errors
from dis_tf import reports
from dis_tf.classes import VOC_CLASSES
from dis_tf.research import page_sections
from dis_tf.research import reading
from dis_tf.research import table3_targets
from dis_tf.research import tables
from dis_tf.research import served_labelmap
from dis_tf.research.ablation import AblationPlan
from dis_tf.research.ablation import setting_names


def load_results(path):
  """Reads a results JSON written by `write_results`.

  Returns:
    (seed_results, plan, command, generator_params, config dict or None).
  """
  with open(path) as f:
    saved = json.load(f)
  try:
    plan = AblationPlan(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in saved["plan"].items()})
    return (saved["seeds"], plan, saved["command"], saved["generator"],
            saved.get("config"))
  except (KeyError, TypeError) as e:
    raise errors.UserError(f"{path}: not a results JSON of tools/ablation.py "
                           f"({e!r}).") from e


def plot_curves(rows, plan, path):
  """mIoU vs t_test, one line per t_train setting (PNG)."""
  # Imported here: selecting the Agg backend is a process-wide side effect,
  # taken only when a plot is drawn.
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  figure, axis = plt.subplots(figsize=(5, 3.5), dpi=100)
  ts = sorted(plan.t_tests)
  for name in setting_names(plan) + ["ensemble"]:
    means = [100 * rows[(name, t)]["miou"][0] for t in ts]
    stds = [100 * rows[(name, t)]["miou"][1] for t in ts]
    axis.errorbar(ts, means, yerr=stds, marker="o", capsize=3, label=name)
  axis.set_xlabel("t_test")
  axis.set_ylabel("mIoU on the reported split (%)")
  axis.legend(fontsize=7)
  axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def results_paths(output, results_dir=None):
  """(JSON, plot) paths of the results page `output`.

  Args:
    output: path of the Markdown page (e.g. RESULTS.md).
    results_dir: where the JSON and the plot go; None: `docs/results/`
      next to the page (the repository's RESULTS.md keeps them in
      docs/results/).

  Returns:
    (`<results_dir>/<stem>.json`, `<results_dir>/<stem>_miou_vs_t_test.png`),
    stem the page's lower-case name ("results").
  """
  if results_dir is None:
    results_dir = os.path.join(os.path.dirname(os.path.abspath(output)),
                               "docs", "results")
  stem = os.path.splitext(os.path.basename(output))[0].lower()
  return (os.path.join(results_dir, f"{stem}.json"),
          os.path.join(results_dir, f"{stem}_miou_vs_t_test.png"))


def reused_trainings(seed_results):
  """The training parts no seed of this run trained (each under 1 s).

  A restarted or extended run (same --workdir) skips finished training
  phases (`dis_tf.training.train`), so its "stage ..." parts take no time;
  the page must say those models come from an earlier run.
  """
  if not all("part_seconds" in r for r in seed_results):
    return []
  return [label for label in seed_results[0]["part_seconds"]
          if label.startswith("stage ")
          and all(r["part_seconds"].get(label, 0.0) < 1.0
                  for r in seed_results)]


def write_results(seed_results, plan, output, command, generator_params,
                  rendered_by=None, config=None, results_dir=None,
                  compare=None):
  """Writes the results page (Markdown), its plot and a JSON of everything.

  Args:
    seed_results: list of `run_seed` results.
    plan: the `AblationPlan`.
    output: path of the Markdown file (e.g. RESULTS.md).
    command: the command line that produced the results.
    generator_params: the synthetic generator's parameters.
    rendered_by: the command that re-rendered the page from a saved JSON
      (None when the page comes straight from the run).
    config: the run's base `ExperimentConfig` as a dict (its latent
      settings and splits are listed on the page).
    results_dir: where the JSON and the plot go (see `results_paths`).
    compare: optional (label, seed_results, plan) of another run on the
      same seeds: a section of paired differences against it is appended
      (`comparison_section`).
  """
  rows = tables.miou_table(seed_results, plan)
  chosen, best_t_train = tables.validated(seed_results, plan)
  directory = os.path.dirname(os.path.abspath(output))
  os.makedirs(directory, exist_ok=True)
  json_path, plot = results_paths(output, results_dir)
  os.makedirs(os.path.dirname(plot), exist_ok=True)
  # The numbers first: a page that fails to render can be re-rendered from
  # them with --from_json.
  atomic.write_text(
      json_path,
      json.dumps({"plan": dataclasses.asdict(plan), "seeds": seed_results,
                  "command": command, "generator": generator_params,
                  "config": config}, indent=1))
  plot_curves(rows, plan, plot)
  short = [reports.short_name(c) for c in VOC_CLASSES[1:]]
  header = "| setting | t_test | " + " | ".join(short) + " | mIoU |"
  lines = [header, "|---|---:|" + "---:|" * (len(short) + 1)]
  for name in setting_names(plan) + ["ensemble"]:
    for t in sorted(plan.t_tests):
      row = rows[(name, t)]
      cells = " | ".join("–" if np.isnan(v) else f"{100 * v:.1f}"
                         for v in row["per_class"][1:])
      mean, std = row["miou"]
      lines.append(f"| {name} | {t} | {cells} | "
                   f"{100 * mean:.1f} ± {100 * std:.1f} |")
  valid_rows = ["| setting | validated t_test per seed | mIoU (mean ± sd) "
                "| per seed |", "|---|---|---:|---|"]
  for name in setting_names(plan) + ["ensemble"]:
    v = chosen[name]["per_seed"]
    mean, std = tables.mean_std(v)
    valid_rows.append(
        f"| {name} | {chosen[name]['t']} | {100 * mean:.1f} ± "
        f"{100 * std:.1f} | " + ", ".join(f"{100 * x:.1f}" for x in v)
        + " |")
  weak0 = seed_results[0]["weak"]
  ts = list(weak0["pseudo_label_miou"])
  pseudo = ["| stage-1 model, t_train | " + " | ".join(ts) + " |",
            "|---|" + "---:|" * len(ts)]
  for key, label in (
      ("pseudo_label_miou", "pseudo-label mIoU, image + tag objective (Eq. 1)"),
      ("pseudo_label_miou_tags_only", "pseudo-label mIoU, tag term only"),
  ):
    pseudo.append(f"| {label} | " + " | ".join(
        "{:.1f} ± {:.1f}".format(*[100 * x for x in tables.mean_std(
            [r["weak"][key][t] for r in seed_results])]) for t in ts) + " |")
  for key in ("precision", "recall", "f1"):
    pseudo.append(f"| cleaned-tag {key} | " + " | ".join(
        "{:.1f}".format(100 * np.mean(
            [r["weak"]["stage1_tags"][t][key] for r in seed_results]))
        for t in ts) + " |")
  tags = ["| model | noisy P | noisy R | noisy F1 | cleaned P | cleaned R | "
          "cleaned F1 |", "|---|---:|---:|---:|---:|---:|---:|"]
  for name in seed_results[0]["weak"]["tags"]:
    cells = []
    for when in ("before", "after"):
      for key in ("precision", "recall", "f1"):
        cells.append(100 * np.mean([r["weak"]["tags"][name][when][key]
                                    for r in seed_results]))
    tags.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
  minutes = sum(r["seconds"] for r in seed_results) / 60
  time_parts = ""
  if all("part_seconds" in r for r in seed_results):
    mean_minutes = {
        label: np.mean([r["part_seconds"][label] for r in seed_results]) / 60
        for label in seed_results[0]["part_seconds"]}
    time_parts = "; per seed (mean): " + ", ".join(
        f"{label} {m:.1f}" for label, m in mean_minutes.items()) + " min"
  reused = reused_trainings(seed_results)
  if reused:
    time_parts += (
        "\n* Trained before this run and reused (their finished phases "
        "were in the workdir, e.g. copied from an earlier run, so this run "
        "skipped them; their times above are the skip): "
        + ", ".join(reused))
  config = config or {}
  data, latent = config.get("data", {}), config.get("latent", {})
  rerendered = "" if rendered_by is None else (
      "\n* Page re-rendered from that run's JSON (no training or scoring) "
      f"by: `{rendered_by}`")
  seeds = [r["seed"] for r in seed_results]
  splits = (f"Settings chosen on `{data.get('select_split')}` "
            f"({plan.select_limit or 'all'} images); every mIoU below is on "
            f"`{data.get('eval_split')}` ({plan.eval_limit or 'all'} "
            "images), which the choice never sees. Weak images for pseudo "
            f"labels / tags: {plan.weak_limit}")
  latent_shown = json.dumps({k: v for k, v in latent.items()
                             if k not in ("t_train", "t_test")},
                            sort_keys=True)
  provenance = "\n".join(page_sections.provenance_lines(
      seed_results, setting_names(plan)))
  served_part = ""
  if all("served" in r for r in seed_results):
    served_part = (
        "\n## The served labelmap: tag refinement, t_test and the setting "
        "served\n" + served_labelmap.section(
            seed_results, plan, setting_names(plan) + ["ensemble"]) + "\n")
  target_list = table3_targets.targets(rows, chosen, best_t_train,
                                       seed_results, plan, minutes)
  page = f"""# Results: the Table-3 ablation on the synthetic benchmark

Written by `tools/ablation.py`; no number on this page is typed by hand.

* Command: `{command}`{rerendered}
* Seeds: {seeds}; t_train: {list(plan.t_trains)}; t_test: {list(plan.t_tests)}
* {splits}
* Latent settings (t_train per row, t_test per column): `{latent_shown}`
* Generator parameters: `{json.dumps(generator_params, sort_keys=True)}`
* Training and scoring time: {minutes:.1f} min on this machine{time_parts}
{provenance}
* {tables.STD_NOTE}

## Targets (issue: make the dual mechanism pay off)
{target_list}
{served_part}
## Per-class IoU on the reported split (mean over seeds; mIoU mean ± sample sd)
mIoU averages the 21 classes (background included) that occur in the
ground truth or the predictions; "–" marks a class absent from both.
The baseline is the stage-1 model (labelled images only); setup 1 is stage 2
with pseudo labels from the plain prediction refined by the given tags
(t_train = 0); "ensemble" averages the refined probabilities of the DIS
t_train settings.

{chr(10).join(lines)}

![mIoU vs t_test]({os.path.relpath(plot, directory)})

## At the t_test chosen on the selection split
Each seed's model serves the t_test with the highest mIoU on the selection
split (ties go to fewer steps); the mIoU is on the reported split.

{chr(10).join(valid_rows)}

## Diagnosis of the latent steps
{page_sections.diagnosis_section(seed_results, plan)}

## Reading: the mechanism behind the targets
{reading.section(seed_results, plan, latent)}

## Departures from the paper, and why
{page_sections.departures(seed_results, plan, latent)}

## Pseudo labels of the weak training images vs t_train
Training-mode latent inference with the stage-1 model, scored against the
generator's true masks (labelmaps) and true tags (cleaned tags). At
t_train = 0 nothing is inferred: the cleaned tags are the given tags and
the labelmap is the plain prediction refined with them (setup 1). The
second row drops the reconstruction term from the latent objective, to
show what it adds.

{chr(10).join(pseudo)}

## Noisy vs cleaned tags of the weak training images
"noisy" are the given tags, "cleaned" are sigmoid(v3) > threshold after
training-mode inference with each model (its own t_train; the baseline
uses the largest t_train; at t_train = 0 they are the given tags), both
against the true tags.

{chr(10).join(tags)}
"""
  if compare is not None:
    page += "\n" + page_sections.comparison_section(seed_results, plan,
                                                     *compare)
  atomic.write_text(output, page)
  logging.info("Results written to %s", output)
  return page
