"""The page of `dis_tf.research.tag_cleaning_study` (TAG_CLEANING.md).

Every sentence is a template filled with the study's numbers or a branch
chosen by them; tests/test_tag_cleaning_study.py feeds numbers that flip
each branch.
"""

import numpy as np

from dis_tf.research import tables
from dis_tf.research import tag_cleaning_study as study

TARGET = 5.0  # Points of F1: cleaned >= noisy + 5 (issue 26).
KEYS = ("seeds", "num_images", "weights", "runs")


def _candidate(c):
  weight, rule, threshold = c
  if rule == study.LABELMAP_RULE:
    return f"plain labelmap, area > {threshold:g}"
  return f"weight {weight:g}, {rule}, > {threshold:g}"


def _mean(runs, f):
  return float(np.mean([f(r) for r in runs]))


def reading(result):
  """The computed conclusions, one bullet each."""
  runs = result["runs"]
  report = lambda key: [r["report"][key] for r in runs]
  chosen = tables.paired_stats(report("chosen"), report("noisy"))
  verdict = tables.verdict(chosen, TARGET)
  taken = sum(list(r["decision"]["chosen"]) != list(study.DEFAULT)
              for r in runs)
  by_labelmap = sum(r["decision"]["chosen"][1] == study.LABELMAP_RULE
                    for r in runs)
  lines = [f"* *Target* (cleaned F1 >= noisy F1 + {TARGET:g}, paired per "
           f"seed, the rule chosen on the selection half): "
           f"{tables.paired_text(chosen)}: **{verdict}**. The margin rule "
           f"replaced the paper's default in {taken} of {len(runs)} seeds"
           + (f", by the plain-labelmap rule in {by_labelmap}."
              if _has_labelmap(runs) else ".")]
  ceiling = tables.paired_stats(report("oracle"), report("noisy"))
  if ceiling["high"] < TARGET:
    lines.append(
        f"* *The ceiling of these rules*: even the best candidate chosen on "
        f"the reported half itself (an oracle) gains only "
        f"{tables.paired_text(ceiling)} over the given tags, below "
        f"+{TARGET:g}: no threshold, tag weight or removal rule of this "
        "family reaches the target with these models' tag probabilities"
        + (" and labelmaps." if _has_labelmap(runs) else "."))
  else:
    lines.append(
        f"* *The ceiling of these rules*: the best candidate chosen on the "
        f"reported half itself (an oracle) gains "
        f"{tables.paired_text(ceiling)} over the given tags; the gap to the "
        "chosen rule is what choosing on the other half costs.")
  given = _mean(runs, lambda r: r["separation"]["given"])
  spurious = _mean(runs, lambda r: r["separation"]["spurious_share"])
  not_given = _mean(runs, lambda r: r["separation"]["not_given"])
  missed = _mean(runs, lambda r: r["separation"]["missed_share"])
  lines.append(
      f"* *What bounds it*: among the given tags, {100 * spurious:.1f}% are "
      f"spurious, and the tag probability (weight 1) ranks a true given tag "
      f"above a spurious one with probability {given:.2f} (AUROC, mean over "
      f"seeds); among the classes not given, {100 * missed:.1f}% are missed "
      f"true tags, ranked above an absent class with probability "
      f"{not_given:.2f}. "
      + ("A removal rule can only gain where the first AUROC is above 0.5, "
         "and an adding rule where the second is. "
         if min(given, not_given) > 0.5 else
         "One of the two is at or below chance, so that side cannot be "
         "cleaned by a threshold. "))
  follows_given = _mean(runs, lambda r: r["separation"]["follows_given"])
  follows_true = _mean(runs, lambda r: r["separation"]["follows_true"])
  lines[-1] += (
      f"Over all classes the probability separates given from not-given "
      f"tags with AUROC {follows_given:.2f} and true from not-true ones with "
      f"{follows_true:.2f}: "
      + ("after the training-mode steps it follows the given tags more "
         "than the truth, so a threshold on it mostly returns the given "
         "tags." if follows_given > follows_true else
         "it follows the truth at least as closely as the given tags."))
  if _has_labelmap(runs):
    labelmap = _mean(runs, lambda r: r["separation"]["labelmap_given"])
    lines.append(
        f"* *The labelmap against the tag head*: the share of a class in "
        f"the network's own plain labelmap (t = 0, no tags) ranks a true "
        f"given tag above a spurious one with probability {labelmap:.2f} "
        f"(AUROC, mean over seeds), against {given:.2f} for the tag "
        "probability after the training-mode steps: "
        + ("the segmentation head, trained on every labelled pixel and the "
           "pseudo labels, tells which classes an image shows better than "
           "the weak tag head, so removing the given tags it does not draw "
           "cleans more than any threshold on sigmoid(v3)."
           if labelmap > given else
           "the tag head separates them at least as well, so the labelmap "
           "adds nothing to the tag probability here."))
  return lines


def _has_labelmap(runs):
  """Runs scored with the plain-labelmap rule (pages before it lack it)."""
  return all("labelmap_given" in r["separation"] for r in runs)


def format_page(result, command):
  runs, seeds = result["runs"], result["seeds"]
  rows = []
  for seed, r in zip(seeds, runs):
    d, rep = r["decision"], r["report"]
    interval = ("-" if d["interval"] is None else
                f"{100 * d['interval']['gain']:+.1f} "
                f"[{100 * d['interval']['low']:+.1f}, "
                f"{100 * d['interval']['high']:+.1f}]")
    rows.append(f"| {seed} | {_candidate(d['best'])} | {interval} | "
                f"{_candidate(d['chosen'])} | {100 * rep['noisy']:.1f} | "
                f"{100 * rep['default']:.1f} | {100 * rep['chosen']:.1f} | "
                f"{100 * rep['oracle']:.1f} "
                f"({_candidate(rep['oracle_candidate'])}) |")
  report = lambda key: [r["report"][key] for r in runs]
  sep = ["| seed | spurious share of given tags | AUROC true vs spurious "
         "given | missed share of classes not given | AUROC missed vs "
         "absent |", "|---|---:|---:|---:|---:|"]
  with_labelmap = _has_labelmap(runs)
  if with_labelmap:
    sep = [sep[0] + " AUROC true vs spurious given, plain labelmap area |",
           sep[1] + "---:|"]
  for seed, r in zip(seeds, runs):
    s = r["separation"]
    sep.append(f"| {seed} | {100 * s['spurious_share']:.1f}% | "
               f"{s['given']:.3f} | {100 * s['missed_share']:.1f}% | "
               f"{s['not_given']:.3f} |"
               + (f" {s['labelmap_given']:.3f} |" if with_labelmap else ""))
  halves = runs[0]["num_images"]
  lines = [
      "# Cleaner tags: the cleaning rule chosen on held-out weak images",
      "",
      "Written by `tools/tag_cleaning_study.py`; no number on this page is "
      "typed by hand.",
      "",
      f"* Command: `{command}`",
      f"* Seeds {seeds}; the first {result['num_images']} weak images of "
      f"each run, training-mode inference at the run's t_train "
      f"({runs[0]['t_train']}) once per tag-term weight "
      f"{result['weights']}; even positions choose ({halves[0]} images), "
      f"odd positions report ({halves[1]} images).",
      f"* Candidates: weight x rule (`paper`: sigmoid(v3) > threshold; "
      f"`remove`: the given tags with sigmoid(v3) > threshold, a departure) "
      f"x threshold {list(study.THRESHOLDS)}"
      + ("; and `plain labelmap`: the given tags whose class covers more "
         "than a share of the pixels of the network's own plain labelmap "
         "(test mode, t = 0, no refinement; a departure: the paper cleans "
         f"by v3 only), share {list(study.AREA_THRESHOLDS)}"
         if with_labelmap else "")
      + f"; default "
      f"{_candidate(study.DEFAULT)} (the paper's). The best-F1 candidate on "
      "the selection half replaces the default only when the lower end of "
      "the 90% paired bootstrap interval of its F1 gain (2000 resamples of "
      "the images) is above 0.",
      f"* {tables.STD_NOTE}",
      "",
      "## Per seed (tag F1 of the object classes, micro, on the reported "
      "half)",
      "",
      "| seed | best on the selection half | its gain over the default "
      "there [90% interval] | served rule | noisy F1 | default F1 | served "
      "F1 | oracle F1 (candidate) |",
      "|---|---|---|---|---:|---:|---:|---|",
      *rows,
      "",
      "Paired per seed on the reported half:",
      f"* served rule minus noisy tags: "
      f"{tables.paired(report('chosen'), report('noisy'))}",
      f"* paper's default minus noisy tags: "
      f"{tables.paired(report('default'), report('noisy'))}",
      f"* served rule minus the paper's default: "
      f"{tables.paired(report('chosen'), report('default'))}",
      f"* oracle minus noisy tags: "
      f"{tables.paired(report('oracle'), report('noisy'))}",
      "",
      "## What the tag probabilities can tell apart (reported half, "
      "weight 1)" + (", and the plain labelmap" if with_labelmap else ""),
      "",
      *sep,
      "",
      "## Reading",
      "",
      *reading(result),
      "",
      f"{tables.TARGET_RULE}",
      "",
  ]
  return "\n".join(lines)


def write(result, output, command):
  return tables.write_page(result, output, command, format_page)


def load(path):
  return tables.load_page(path, KEYS, "tools/tag_cleaning_study.py")
