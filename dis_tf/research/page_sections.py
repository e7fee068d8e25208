"""The prose sections of RESULTS.md: the reading, the diagnosis tables, the
departures from the paper and the comparison with another run.

Every sentence is a template filled with the run's numbers or a branch
chosen by them (`dis_tf.research.results_page` assembles the page).
"""

import numpy as np

from dis_tf import errors
from dis_tf.research import diagnosis
from dis_tf.research import tables
from dis_tf.research.ablation import setting_names


def reading(seed_results, plan, latent):
  """What the numbers say about the mechanism (every number computed)."""
  if not all("diagnosis" in r for r in seed_results):
    return "(needs the diagnosis: --diagnosis_images > 0)"
  pct = lambda x: 100.0 * x
  mean = lambda f: float(np.mean([f(r) for r in seed_results]))
  name = f"DIS t_train={max(plan.t_trains)}"
  diag = lambda r: r["diagnosis"][name]
  t = diag(seed_results[0])["t_test"]
  miou = lambda key: mean(lambda r: diag(r)["miou"][key])
  rec = lambda key: mean(lambda r: diag(r)["reconstruction"][key])
  flip = lambda rel, o: pct(mean(lambda r: diag(r)["flips"][rel][o]))
  lines = [
      f"* *Test-time steps* ({name}, selection split, mIoU at t=0 "
      f"{pct(miou('t0')):.1f}): after {t} steps of the paper's step "
      f"{pct(miou('both')):.1f}, with v1 frozen {pct(miou('u1')):.1f}, with "
      f"the per-pixel v1 step {pct(miou('per_pixel')):.1f}. v1 takes "
      f"{pct(mean(lambda r: diag(r)['v1_share']['median'])):.0f}% of the "
      "squared step norm and moves every pixel's class scores at once; the "
      "step-size sweep shows the paper's step at the edge of stability "
      "(larger steps raise the objective). Taking that direction out of the "
      "step is what turns the test-time steps from a loss into a gain.",
      f"* *What subnet-2 decodes* ({name}): reconstruction error "
      f"{rec('soft_t0'):.0f} from the soft prediction, "
      f"{rec('argmax_t0'):.0f} from its one-hot argmax, "
      f"{rec('truth'):.0f} from the ground truth, which beats the argmax in "
      f"{pct(rec('truth_beats_argmax_t0')):.0f}% of images. The labels carry "
      "a signal, but most of what the objective rewards is the soft mass, so "
      "the descent edits a colour code and the labels follow only in part.",
      "* *Where the flips go* (paper's step, % of flipped pixels): to or "
      f"from background {flip('background', 'fixed'):.0f} fixed / "
      f"{flip('background', 'broke'):.0f} broke; same-hue pairs "
      f"(c, c+-10) {flip('same_hue', 'fixed'):.0f} fixed / "
      f"{flip('same_hue', 'broke'):.0f} broke. A 1/8-scale reconstruction "
      "cannot tell same-hue classes apart; it can fix missed extent.",
  ]
  weak = [r["weak"] for r in seed_results]
  key = str(max(plan.t_trains))
  both = np.mean([w["pseudo_label_miou"][key] for w in weak])
  tags = np.mean([w["pseudo_label_miou_tags_only"][key] for w in weak])
  train_update = latent.get("train_update", "both")
  if train_update == "both":
    effect = ("In training mode the image term reaches v1 through the same "
              "dominant up(v1) path as at test time. These are the pseudo "
              "labels stage 2 starts from: it recomputes them with the "
              "model it trains, and `tools/pseudo_label_study.py` scores "
              "those of the trained models, per training-mode step "
              "(docs/results/train_update_per_pixel/PSEUDO_LABELS.md).")
  else:
    effect = (f"This run also uses the \"{train_update}\" rule in training "
              "mode (a departure from the paper), so the image term's step "
              "through v1 is rescaled there too.")
  lines.append(
      f"* *Pseudo labels* (stage-1 model, t_train={key}, training-mode step "
      f"\"{train_update}\" as configured): {pct(both):.1f} with the image + "
      f"tag objective vs {pct(tags):.1f} with the tag term alone. " + effect)
  if all("classifier_tags" in r for r in seed_results):
    alone = mean(lambda r: r["classifier_tags"]["classifier"]["f1"])
    given = mean(lambda r: r["classifier_tags"]["given"]["f1"])
    lines.append(
        f"* *Tag cleaning*: the stage-1 tag classifier alone reaches F1 "
        f"{pct(alone):.1f} against the given tags' {pct(given):.1f}. Cleaned "
        "tags start from the given tags and move towards the classifier, so "
        "they can gain only where the classifier is confidently right; with "
        "a classifier this far below the given tags the +5 target needs a "
        "better tag classifier (the paper's is a ResNet101 pretrained on "
        "ImageNet and COCO), not a different cleaning rule.")
  return "\n".join(lines)


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


def departures(seed_results, plan, latent):
  """The run's departures from the paper, each with the measurement."""
  lines = []
  diag = [r.get("diagnosis") for r in seed_results]
  have = all(diag)
  if latent.get("update", "both") != "both":
    text = (f"1. *Test-time step* (`latent.update = "
            f"\"{latent.get('update')}\"`, `dis_tf/modeling/latent.py: "
            "block_scales`). The paper descends on (u1, v1) with one step "
            "size. Here the u3-path part of v1's gradient is divided by "
            "h * w: up(v1) adds v1 to every position of u2, so that "
            "gradient sums h * w per-position terms and dominates the step.")
    if have:
      names = list(diag[0])
      share = np.mean([d[n]["v1_share"]["median"] for d in diag
                       for n in names])
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
      text += (". The choice was made on the selection split with one "
               "seed before this run; the diagnosis table re-measures every "
               "update mode per seed on the selection split, and the "
               "reported split never entered the choice.")
    lines.append(text)
  if latent.get("train_update", "both") != "both":
    lines.append(f"{len(lines) + 1}. *Training-mode step* (`latent."
                 f"train_update = \"{latent.get('train_update')}\"`): the "
                 "same rule for the pseudo labels and cleaned tags.")
  if latent.get("monotone"):
    lines.append(f"{len(lines) + 1}. *Monotone steps* (`latent.monotone`): "
                 "a step that raises the objective is not taken and the "
                 "step size halves.")
  if all("served" in r for r in seed_results):
    lines.append(
        f"{len(lines) + 1}. *Final prediction* (`latent.tag_refinement`, "
        "`dis_tf/modeling/subnets.py: refine_labelmap`). The paper always "
        "refines softmax(u3) by sigmoid(v3). Here the served prediction is "
        "chosen on the selection split among no refinement (the default), "
        "the paper's and two calibrated biases sigmoid(v3 + b), and a "
        "refinement serves only when it clears the bootstrap margin: the "
        "tag classifier trained here misses most present classes, and the "
        "section \"The served labelmap\" measures what the paper's "
        "refinement then costs.")
    lines.append(
        f"{len(lines) + 1}. *Evaluation canvas* (`dis_tf/image_ops.py: "
        "fit_to_canvas`): every image is fitted into the training crop "
        "size (long side resized, aspect kept, padded with the mean "
        "colour), the rule the export serves with; the paper does not say "
        "at which size it tests.")
  lines.append(
      f"{len(lines) + 1}. *Protocol, not method*: t_test and the best "
      "t_train are chosen on a split held out from the reported one (the "
      "paper reports Table 3 without saying where t_test was chosen).")
  return "\n".join(lines)


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
           ""]
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
