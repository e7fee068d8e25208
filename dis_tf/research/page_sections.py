"""The prose sections of RESULTS.md: the diagnosis tables, the departures
from the paper and the comparison with another run (the reading is in
`dis_tf.research.reading`).

Every sentence is a template filled with the run's numbers or a branch
chosen by them (`dis_tf.research.results_page` assembles the page).
"""

import json

import numpy as np

from dis_tf import errors
from dis_tf.research import diagnosis
from dis_tf.research import reading
from dis_tf.research import tables
from dis_tf.research.ablation import setting_names


def diagnosis_section(seed_results, plan):
  """Markdown tables of `dis_tf.research.diagnosis` (mean over seeds)."""
  if not all("diagnosis" in r for r in seed_results):
    return "(not run: --diagnosis_images=0)"
  names = list(seed_results[0]["diagnosis"])
  mean = lambda f: float(np.mean([f(r) for r in seed_results]))
  first = seed_results[0]["diagnosis"][names[0]]
  t = first["t_test"]
  out = [f"On {first['num_images']} selection-split images per seed, mean "
         f"over {len(seed_results)} seeds; steps at the model's step size "
         f"unless stated; mIoU after t = {t} steps.", ""]
  updates = [k for k in first["miou"] if k != "t0"]
  out.append("| model | v1 share of the step (median) | mIoU t=0 | "
             + " | ".join(f"t={t}, {u}" for u in updates) + " |")
  out.append("|---|---:|---:|" + "---:|" * len(updates))
  for name in names:
    cells = [mean(lambda r: r["diagnosis"][name]["v1_share"]["median"]),
             mean(lambda r: r["diagnosis"][name]["miou"]["t0"])]
    cells += [mean(lambda r, u=u: r["diagnosis"][name]["miou"][u])
              for u in updates]
    out.append(f"| {name} | " + " | ".join(f"{100 * c:.1f}" for c in cells)
               + " |")
  out += ["", f"Paired per seed, mIoU at t = {t} with each update minus "
          "both blocks at the one step size (the paper):"]
  for name in names:
    b = [r["diagnosis"][name]["miou"]["both"] for r in seed_results]
    for update in updates:
      if update == "both":
        continue
      a = [r["diagnosis"][name]["miou"][update] for r in seed_results]
      out.append(f"* {name}, {update}: {tables.paired(a, b)}")
  out += ["", "Reconstruction error ||z3 - I||^2 per image when subnet-2 "
          "decodes: the soft prediction softmax(u3), its one-hot argmax, "
          "and the ground truth (class fractions per cell); 'truth wins' is "
          "the share of images where the truth reconstructs better than "
          "the t=0 argmax.", "",
          f"| model | soft t=0 | argmax t=0 | truth | soft t={t} | "
          f"argmax t={t} | truth wins |", "|---|---:|---:|---:|---:|---:|---:|"]
  for name in names:
    rec = lambda r, k: r["diagnosis"][name]["reconstruction"][k]
    cells = [mean(lambda r, k=k: rec(r, k)) for k in
             ("soft_t0", "argmax_t0", "truth", "soft_t", "argmax_t")]
    wins = mean(lambda r: rec(r, "truth_beats_argmax_t0"))
    out.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells)
               + f" | {100 * wins:.0f}% |")
  out += ["", f"Labelled pixels whose label the t = {t} steps (both blocks) "
          "change, by the relation of old and new class (generator hues) "
          "and outcome, as % of the flipped pixels:", "",
          "| model | flipped (% of pixels) | " + " | ".join(
              f"{rel} {o}" for rel in diagnosis.RELATIONS
              for o in diagnosis.OUTCOMES) + " |",
          "|---|---:|" + "---:|" * (len(diagnosis.RELATIONS)
                                    * len(diagnosis.OUTCOMES))]
  for name in names:
    cells = [mean(lambda r, rel=rel, o=o:
                  r["diagnosis"][name]["flips"][rel][o])
             for rel in diagnosis.RELATIONS for o in diagnosis.OUTCOMES]
    flipped = mean(lambda r: r["diagnosis"][name]["flipped"])
    out.append(f"| {name} | {100 * flipped:.1f} | " + " | ".join(
        f"{100 * c:.1f}" for c in cells) + " |")
  sweep = first["sweep"]
  out += ["", "Step size x count at a fixed product: mIoU at the end, and "
          "the objective relative to t=0 at 0%, 20%, ..., 100% of the steps:",
          "", "| model | step size x steps | mIoU | objective / objective(0) |",
          "|---|---|---:|---|"]
  for name in names:
    for i, entry in enumerate(sweep):
      miou = mean(lambda r, i=i: r["diagnosis"][name]["sweep"][i]["miou"])
      trace = np.mean([r["diagnosis"][name]["sweep"][i]["objective"]
                       for r in seed_results], axis=0)
      out.append(f"| {name} | {entry['step_size']:g} x {entry['steps']} | "
                 f"{100 * miou:.1f} | " + " ".join(
                     f"{v:.3f}" for v in trace[::2]) + " |")
  if all("classifier_tags" in r for r in seed_results):
    out += ["", "Tag classifier of the stage-1 model alone (test mode, no "
            "tags given, sigmoid(v3) > threshold) vs the given tags, against "
            "the true tags of the weak images:", "",
            "| tags | precision | recall | F1 |", "|---|---:|---:|---:|"]
    for key, label in (("classifier", "classifier alone"),
                       ("given", "given (noisy)")):
      cells = [mean(lambda r, k=k: r["classifier_tags"][key][k])
               for k in ("precision", "recall", "f1")]
      out.append(f"| {label} | " + " | ".join(f"{100 * c:.1f}"
                                              for c in cells) + " |")
  return "\n".join(out)


def _update_choice(diag):
  """The run's own selection-split evidence on per_pixel vs u1 and both."""
  parts = []
  for name in diag[0]:
    miou = lambda key, name=name: [d[name]["miou"][key] for d in diag]
    p = tables.paired_stats(miou("per_pixel"), miou("u1"))
    parts.append(
        f"{name}: per_pixel minus u1 {tables.paired_text(p)}, "
        + reading.by_interval(p, "per_pixel ahead", "plain u1 ahead",
                              "no resolved difference"))
  first = diag[0][next(iter(diag[0]))]
  return (" No recorded selection exists for this choice: no file of the "
          "run or the repository records the experiment that chose it. "
          f"This run's own diagnosis on the selection split "
          f"({first['num_images']} images per seed, t = {first['t_test']}"
          f", paired per seed): " + "; ".join(parts) + ".")


def departures(seed_results, plan, latent):
  """The run's departures from the paper, each with its reason and, where
  the run has one, its measurement."""
  lines = []
  diag = [r.get("diagnosis") for r in seed_results]
  have = all(diag)
  share = (float(np.mean([d[n]["v1_share"]["median"] for d in diag
                          for n in d])) if have else None)
  if latent.get("update", "both") != "both":
    text = (f"1. *Test-time step* (`latent.update = "
            f"\"{latent.get('update')}\"`, `dis_tf/modeling/latent.py: "
            "block_scales`). The paper descends on (u1, v1) with one step "
            "size. Here the u3-path part of v1's gradient is divided by "
            "h * w: up(v1) adds v1 to every position of u2, so that "
            "gradient sums h * w per-position terms.")
    if have:
      names = list(diag[0])
      sweep = {e["step_size"]: i for i, e in enumerate(diag[0][names[-1]]
                                                       ["sweep"])}
      rising = [f"{size:g}" for size, i in sorted(sweep.items())
                if np.mean([d[names[-1]]["sweep"][i]["objective"][-1]
                            for d in diag]) > 1.0]
      text += (f" Measured on this run's models: v1 carries "
               f"{100 * share:.0f}% of the squared step norm (median over "
               "images, mean over models and seeds)")
      if rising:
        text += (f", and plain steps of size {', '.join(rising)} raise the "
                 f"objective of {names[-1]} instead of lowering it")
      text += "." + _update_choice(diag)
    else:
      text += (" No recorded selection exists for this choice, and this "
               "run has no diagnosis to check it.")
    lines.append(text)
  if latent.get("train_update", "both") != "both":
    lines.append(f"{len(lines) + 1}. *Training-mode step* (`latent."
                 f"train_update = \"{latent.get('train_update')}\"`): the "
                 "same rule for the pseudo labels and cleaned tags.")
  if latent.get("monotone"):
    lines.append(f"{len(lines) + 1}. *Monotone steps* (`latent.monotone`): "
                 "a step that raises the objective is not taken and the "
                 "step size halves.")
  if latent.get("clip_norm") is not None:
    text = (
        f"{len(lines) + 1}. *Gradient clipping* (`latent.clip_norm = "
        f"{latent['clip_norm']:g}`, `dis_tf/modeling/latent.py: "
        "latent_inference, _clip_scale`): each latent step is clipped per "
        "example to a joint norm over (u1, v1); the paper does not clip. "
        "Reason: a guard against divergent steps, in the loop since its "
        "first version (then at step size 1.0). Because the norm is joint, "
        "a clipped step shrinks u1's step by the same factor as v1's, so "
        "under \"both\" the large v1 gradient also shortens u1's step")
    text += (f" (v1 carries {100 * share:.0f}% of the squared step norm "
             "here)" if have else "")
    lines.append(text + ". How often the clip binds is not recorded by "
                 "this run.")
  lines.append(
      f"{len(lines) + 1}. *Subnet-2's input* (`dis_tf/modeling/subnets.py: "
      "Subnet2.call`): subnet-2 decodes softmax(u3), not the logits u3. "
      "Reason: the reconstruction then depends on the labelmap and not on "
      "the scale of the logits. Not measured against the logits.")
  lines.append(
      f"{len(lines) + 1}. *Weight of the tag term* (`dis_tf/modeling/"
      "latent.py: latent_objective`): the latent objective is ||z3 - I||^2 "
      "+ h * w * 3 * mean_c BCE(v3_c, T_c), the training losses' weighted "
      "sum times n = h * w * 3. Reason: the image term stays the paper's "
      "squared distance and the two terms keep the training losses' "
      "ratio; an earlier version summed the tag term over the classes, and "
      "the image term swamped it (training-mode inference hardly moved v3 "
      "towards the given tags). Not measured against other weights.")
  if all("served" in r for r in seed_results):
    recall = ""
    if all("classifier_tags" in r for r in seed_results):
      r = float(np.mean([s["classifier_tags"]["classifier"]["recall"]
                         for s in seed_results]))
      recall = (f": the tag classifier trained here has recall "
                f"{100 * r:.1f}% on the weak images"
                + (", so it misses most present classes" if r < 0.5 else ""))
    lines.append(
        f"{len(lines) + 1}. *Final prediction* (`latent.tag_refinement`, "
        "`dis_tf/modeling/subnets.py: refine_labelmap`). The paper always "
        "refines softmax(u3) by sigmoid(v3). Here the served prediction is "
        "chosen on the selection split among no refinement (the default), "
        "the paper's and two calibrated biases sigmoid(v3 + b), and a "
        "refinement serves only when it clears the bootstrap margin"
        f"{recall}; the section \"The served labelmap\" measures what the "
        "paper's refinement costs.")
    lines.append(
        f"{len(lines) + 1}. *Evaluation canvas* (`dis_tf/image_ops.py: "
        "fit_to_canvas`): every image is fitted into the evaluation "
        "canvas (`data.eval_crop_size`; long side resized, aspect kept, "
        "padded with the mean colour), the rule the export serves with; "
        "the paper does not say at which size it tests.")
  lines.append(
      f"{len(lines) + 1}. *Protocol, not method*: t_test and the best "
      "t_train are chosen on a split held out from the reported one (the "
      "paper reports Table 3 without saying where t_test was chosen).")
  return "\n".join(lines)


def _version_text(version):
  if not version or not version.get("commit"):
    return "not recorded"
  return version["commit"][:7] + (" with uncommitted changes"
                                  if version.get("dirty") else "")


def provenance_lines(seed_results, names):
  """The page's header lines on which code trained and scored each row.

  Args:
    seed_results: the run's per-seed results; `provenance` is what
      `ablation.row_provenance` recorded (absent in runs before it).
    names: the trained rows (`setting_names`).

  Returns:
    Markdown bullet lines (issue 26: one code version per page, or the
    versions row by row).
  """
  if not all("provenance" in r for r in seed_results):
    return ["* Code version per row: not recorded (this run's JSON predates "
            "`ablation.row_provenance`); the rows may come from several "
            "code versions."]
  per_row = {}
  for name in names:
    seen = []
    for r in seed_results:
      for version in r["provenance"]["rows"][name]["code"].values():
        text = _version_text(version)
        if text not in seen:
          seen.append(text)
    per_row[name] = seen
  scoring = []
  for r in seed_results:
    text = _version_text(r["provenance"]["scoring"])
    if text not in scoring:
      scoring.append(text)
  every = {t for texts in per_row.values() for t in texts} | set(scoring)
  if len(every) == 1 and "not recorded" not in every:
    lines = [f"* Code version: every row trained and scored by "
             f"{every.pop()} (the phases' fingerprints)."]
  else:
    lines = ["* Code version per row (from each model's phase "
             "fingerprints, all seeds): " + "; ".join(
                 f"{name}: {', '.join(texts)}"
                 for name, texts in per_row.items())
             + f"; scoring: {', '.join(scoring)}. **Several code versions "
             "or unrecorded ones: the rows are not one code version.**"]
  # Training-mode latent settings as each row's last phase recorded them.
  settings = {name: seed_results[0]["provenance"]["rows"][name]["latent"]
              for name in names}
  keys = sorted({k for v in settings.values() for k in v
                 if k != "latent.t_train"})
  differing = [k for k in keys
               if len({json.dumps(v.get(k)) for v in settings.values()
                       if v}) > 1]
  if differing:
    lines.append("* Training-mode latent settings that differ between rows "
                 "(fingerprints): " + "; ".join(
                     f"{name}: " + ", ".join(
                         f"{k.split('.', 1)[1]}={v.get(k)}" for k in differing)
                     for name, v in settings.items() if v))
  return lines


CHOICE_RULE = (
    "this run's setting is taken only when the lower end of the 90% t "
    "interval of this run minus that one (each model at its validated "
    "t_test, mIoU on the selection split, paired per seed) is above 0; "
    "otherwise that run's setting stays (issue 26: a non-default only when "
    "its gain clears the measured margin).")


def setting_choice(this_select, other_select):
  """The choice between two runs' setting, by `CHOICE_RULE`.

  Args:
    this_select, other_select: per-seed selection-split mIoU (in [0, 1])
      of one model in this run and in the other run, each at its validated
      t_test.

  Returns:
    The paired difference and the verdict, as a sentence fragment.
  """
  p = tables.paired_stats(this_select, other_select)
  text = tables.paired_text(p, per_seed=True)
  if p["n"] > 1 and p["low"] > 0:
    return f"{text}: **this run's setting is taken**."
  if p["n"] > 1 and p["high"] < 0:
    return f"{text}: that run's setting is ahead; **that run's setting stays**."
  return (f"{text}: no resolved gain; **that run's setting stays**.")


def comparison_section(seed_results, plan, label, other_results,
                       other_plan):
  """Markdown: this run minus another run of the same seeds, paired per seed.

  For ablations that change one setting (e.g. `--latent.train_update`) on
  the same benchmark, seeds and stage-1 models: every setting of both runs
  at its validated t_test and at each shared t_test, the pseudo labels and
  the cleaned-tag F1.

  Args:
    seed_results, plan: this run (`load_results`).
    label: how the page names the other run (e.g. its JSON path).
    other_results, other_plan: the other run.

  Returns:
    The section, starting with its heading.

  Raises:
    UserError: the runs do not have the same seeds.
  """
  seeds = [r["seed"] for r in seed_results]
  if [r["seed"] for r in other_results] != seeds:
    raise errors.UserError(
        f"{label}: seeds {[r['seed'] for r in other_results]}, this run "
        f"{seeds}: a paired comparison needs the same seeds.")
  chosen, _ = tables.validated(seed_results, plan)
  other_chosen, _ = tables.validated(other_results, other_plan)
  rows = tables.miou_table(seed_results, plan)
  other_rows = tables.miou_table(other_results, other_plan)
  names = [n for n in setting_names(plan) + ["ensemble"]
           if n in other_chosen]
  t_tests = [t for t in plan.t_tests if t in other_plan.t_tests]
  lines = [f"## Paired against `{label}`",
           "This run minus that one, per seed (mIoU on the reported split).",
           "",
           "Which run's setting a model keeps is decided on the selection "
           "split, never on the reported one: " + CHOICE_RULE, ""]
  for name in names:
    if name.startswith("DIS"):
      lines.append(f"* {name}, choice on the selection split: "
                   + setting_choice(chosen[name]["select"],
                                    other_chosen[name]["select"]))
  lines.append("")
  for name in names:
    lines.append(f"* {name}, each at its validated t_test: " + tables.paired(
        chosen[name]["per_seed"], other_chosen[name]["per_seed"]))
    for t in t_tests:
      lines.append(f"* {name}, t_test={t}: " + tables.paired(
          rows[(name, t)]["per_seed"], other_rows[(name, t)]["per_seed"]))
  weak, other_weak = seed_results[0]["weak"], other_results[0]["weak"]
  for key, what in (("pseudo_label_miou", "image + tag objective"),
                    ("pseudo_label_miou_tags_only", "tag term only")):
    for t in weak[key]:
      if t in other_weak[key]:
        lines.append(
            f"* pseudo labels ({what}), stage-1 model, t_train={t}: "
            + tables.paired([r["weak"][key][t] for r in seed_results],
                     [r["weak"][key][t] for r in other_results]))
  for name in weak["tags"]:
    if name in other_weak["tags"]:
      lines.append(f"* cleaned-tag F1, {name}: " + tables.paired(
          [r["weak"]["tags"][name]["after"]["f1"] for r in seed_results],
          [r["weak"]["tags"][name]["after"]["f1"] for r in other_results]))
  return "\n".join(lines) + "\n"
