"""RESULTS.md "Reading": what the numbers say, every sentence computed.

Each sentence is a template filled with the run's numbers or one of the
branches chosen by them (a paired difference's 90% t interval above 0,
below 0, or containing 0; `dis_tf.research.tables`); every branch's text is
written here and tested (tests/test_research_pages.py). A cause that the
run did not measure is not stated.
"""

import numpy as np

from dis_tf.research import tables


def by_interval(p, above, below, within):
  """`above` when the 90% interval of `p` is above 0, `below` when it is
  below 0, else `within` (also for one seed: no interval)."""
  if p["low"] > 0:
    return above
  if p["high"] < 0:
    return below
  return within


def _steps(diag, name, t, share, step_size):
  """The test-time steps of `name`: the paper's step, v1 frozen, per_pixel."""
  miou = lambda key: np.asarray([d[name]["miou"][key] for d in diag])
  both = tables.paired_stats(miou("both"), miou("t0"))
  u1 = tables.paired_stats(miou("u1"), miou("t0"))
  u1_both = tables.paired_stats(miou("u1"), miou("both"))
  pp_u1 = tables.paired_stats(miou("per_pixel"), miou("u1"))
  text = (f"* *Test-time steps* ({name}, selection split, {t} steps, mIoU "
          f"at t=0 {100 * miou('t0').mean():.1f}; paired per seed): the "
          f"paper's step minus t=0 {tables.paired_text(both)}; v1 frozen "
          f"(u1) minus t=0 {tables.paired_text(u1)}; v1 frozen minus the "
          f"paper's step {tables.paired_text(u1_both)}. Under the paper's "
          f"step v1 carries {100 * share:.0f}% of the squared step norm "
          "(median over images, mean over seeds). ")
  if u1_both["low"] > 0:
    text += by_interval(
        u1, by_interval(both, "Freezing v1 makes the steps gain where they "
                        "gained already, and gain more.",
                        "Freezing v1 turns the steps' loss into a gain.",
                        "Freezing v1 turns steps of no resolved effect into "
                        "a gain."),
        "Freezing v1 takes back part of the paper's step's loss, but the "
        "steps still lose against t=0.",
        "Freezing v1 takes back the paper's step's loss, but no gain over "
        "t=0 is resolved.")
  elif u1_both["high"] < 0:
    text += "Freezing v1 does worse than the paper's step."
  else:
    text += "Freezing v1 makes no resolved difference to the paper's step."
  text += " The per-pixel v1 step minus v1 frozen: " + by_interval(
      pp_u1, "per_pixel is ahead", "plain u1 is ahead",
      "no resolved difference") + f" ({tables.paired_text(pp_u1)})."
  sweep = diag[0][name]["sweep"]
  rising = [e["step_size"] for i, e in enumerate(sweep)
            if np.mean([d[name]["sweep"][i]["objective"][-1]
                        for d in diag]) > 1.0]
  if rising:
    text += (" In the step-size sweep (step size x steps fixed), steps of "
             f"size {', '.join(f'{s:g}' for s in rising)} end with a higher "
             "objective than at t=0 (mean over seeds); the model's step "
             f"size is {step_size:g}.")
  else:
    text += (" In the step-size sweep (step size x steps fixed), every "
             "step size lowers the objective (mean over seeds); the "
             f"model's step size is {step_size:g}.")
  return text


def _decoding(diag, name, t):
  """What subnet-2 reconstructs best: soft prediction, argmax or truth."""
  rec = lambda key: float(np.mean([d[name]["reconstruction"][key]
                                   for d in diag]))
  wins = rec("truth_beats_argmax_t0")
  text = (f"* *What subnet-2 decodes* ({name}): reconstruction error "
          f"{rec('soft_t0'):.0f} from the soft prediction, "
          f"{rec('argmax_t0'):.0f} from its one-hot argmax, "
          f"{rec('truth'):.0f} from the ground truth. ")
  if rec("truth") < rec("argmax_t0") and wins > 0.5:
    text += (f"The ground truth reconstructs better than the predicted "
             f"labels in {100 * wins:.0f}% of images: the image term "
             "carries a signal about the labels. ")
  else:
    text += (f"The ground truth reconstructs better than the predicted "
             f"labels in only {100 * wins:.0f}% of images: no signal about "
             "the labels is measured in the image term. ")
  if rec("soft_t0") < rec("truth"):
    text += ("The soft prediction reconstructs better than the ground "
             "truth itself: the image term rewards soft class mass more "
             "than correct labels. ")
  else:
    text += "The soft prediction reconstructs no better than the truth. "
  soft = 1 - rec("soft_t") / rec("soft_t0")
  hard = 1 - rec("argmax_t") / rec("argmax_t0")
  text += (f"After the {t} steps the error falls by {100 * soft:.0f}% from "
           f"the soft prediction and by {100 * hard:.0f}% from its argmax"
           + (": the steps lower the soft error by the larger share."
              if soft > hard else
              ": the steps lower the labels' error by at least as large a "
              "share."))
  return text


def _flips(diag, name):
  """Where the paper's step flips labels: fixed vs broke, per relation."""
  parts = []
  for rel, label in (("background", "to or from background"),
                     ("same_hue", "between same-hue classes (c, c+-10)")):
    get = lambda o, rel=rel: np.asarray([d[name]["flips"][rel][o]
                                         for d in diag])
    p = tables.paired_stats(get("fixed"), get("broke"))
    parts.append(
        f"{label} {100 * get('fixed').mean():.0f}% fixed / "
        f"{100 * get('broke').mean():.0f}% broke, " + by_interval(
            p, "more fixed than broken", "more broken than fixed",
            "no resolved difference") + f" ({tables.paired_text(p)})")
  return (f"* *Where the flips go* ({name}, paper's step, % of flipped "
          "pixels, fixed minus broke paired per seed): " + "; ".join(parts)
          + ".")


def _pseudo_labels(seed_results, plan, latent):
  key = str(max(plan.t_trains))
  both = [r["weak"]["pseudo_label_miou"][key] for r in seed_results]
  tags = [r["weak"]["pseudo_label_miou_tags_only"][key] for r in seed_results]
  p = tables.paired_stats(both, tags)
  train_update = latent.get("train_update", "both")
  text = (f"* *Pseudo labels* (stage-1 model, t_train={key}, training-mode "
          f"step \"{train_update}\"): {100 * np.mean(both):.1f} with the "
          f"image + tag objective vs {100 * np.mean(tags):.1f} with the tag "
          f"term alone ({tables.paired_text(p)}): the image term "
          + by_interval(p, "raises", "lowers", "does not resolvably change")
          + " the pseudo labels stage 2 starts from. ")
  if train_update == "both":
    return text + (
        "Stage 2 recomputes them with the model it trains; "
        "`tools/pseudo_label_study.py` scores those of the trained models, "
        "per training-mode step "
        "(docs/results/train_update_per_pixel/PSEUDO_LABELS.md).")
  return text + (f"This run uses the \"{train_update}\" rule in training "
                 "mode too (a departure from the paper).")


def _tags(seed_results, plan, latent):
  alone = [r["classifier_tags"]["classifier"]["f1"] for r in seed_results]
  given = [r["classifier_tags"]["given"]["f1"] for r in seed_results]
  p = tables.paired_stats(alone, given)
  name = f"DIS t_train={max(plan.t_trains)}"
  tags = [r["weak"]["tags"][name] for r in seed_results]
  cleaned = tables.paired_stats([t["after"]["f1"] for t in tags],
                                [t["before"]["f1"] for t in tags])
  return (
      f"* *Tag cleaning*: the stage-1 tag classifier alone reaches F1 "
      f"{100 * np.mean(alone):.1f} against the given tags' "
      f"{100 * np.mean(given):.1f}, "
      + by_interval(p, "above", "below", "not resolvably different from")
      + f" them ({tables.paired_text(p)}). Cleaning with {name} "
      + by_interval(cleaned, "raises", "lowers", "does not resolvably change")
      + f" the F1 of the given tags ({tables.paired_text(cleaned)}). This "
      "run tries one cleaning rule (sigmoid(v3) > "
      f"{latent.get('tag_threshold', 0.5):g} after each model's t_train "
      "training-mode steps) with its own models' tag classifiers; "
      "docs/results/TAG_CLEANING.md (`tools/tag_cleaning_study.py`) chooses "
      "among other thresholds, tag-term weights and rules, the network's own "
      "plain labelmap among them, on held-out weak images of the demo's "
      "seed runs, and docs/results/ITERATED_CLEANING.md "
      "(`tools/iterated_cleaning_study.py`) trains stage 2 again on the "
      "tags that labelmap cleans.")


def section(seed_results, plan, latent):
  """The "Reading" section (Markdown bullets)."""
  if not all("diagnosis" in r for r in seed_results):
    return "(needs the diagnosis: --diagnosis_images > 0)"
  diag = [r["diagnosis"] for r in seed_results]
  name = f"DIS t_train={max(plan.t_trains)}"
  t = diag[0][name]["t_test"]
  share = float(np.mean([d[name]["v1_share"]["median"] for d in diag]))
  lines = [_steps(diag, name, t, share, latent.get("step_size", 0.1)),
           _decoding(diag, name, t), _flips(diag, name),
           _pseudo_labels(seed_results, plan, latent)]
  if all("classifier_tags" in r for r in seed_results):
    lines.append(_tags(seed_results, plan, latent))
  return "\n".join(lines)
