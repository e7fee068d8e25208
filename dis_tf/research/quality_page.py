"""The page of the quality study (docs/results/QUALITY.md, issue 28): the
per-seed tables, the paired differences, the targets under the interval
rule, and a reading whose every sentence is chosen by the numbers of
`quality_study.run_study`'s result.
"""

import numpy as np

from dis_tf import quality
from dis_tf.research import reading
from dis_tf.research import quality_remedies
from dis_tf.research import quality_study
from dis_tf.research import tables

PARTS = quality_study.PARTS
BASELINES = quality_study.BASELINES
COVERAGES = quality_study.COVERAGES

TARGET_AUROC = 80.0      # Hundredths of AUROC (issue 28).
TARGET_TOP_HALF = 10.0   # mIoU points of the most-trusted half over all.


def _per_seed(runs, *keys):
  """[value of runs[i][keys...]] as a float array."""
  out = []
  for r in runs:
    for key in keys:
      r = r[key]
    out.append(r)
  return np.asarray(out, np.float64)


def format_page(result, command):
  """The Markdown page: per-seed table, paired differences, targets, and a
  reading whose every sentence is chosen by the numbers."""
  seeds, runs = result["seeds"], result["runs"]
  n = len(seeds)
  au = lambda key: _per_seed(runs, "auroc", key)
  sel = lambda key, c: _per_seed(runs, "selective", key, f"{c:g}")
  rows = []
  for seed, r in zip(seeds, runs):
    a = r["auroc"]
    rows.append([seed] + [f"{a[k]:.3f}" for k in ("score",) + PARTS
                          + BASELINES]
                + [f"{100 * r['selective']['score'][f'{c:g}']:.1f}"
                   for c in COVERAGES])
  header = (["seed", "score"] + list(PARTS)
            + [f"baseline: {b}" for b in BASELINES]
            + [f"mIoU top {int(100 * c)}%" for c in COVERAGES])
  zero = np.zeros(n)
  score = tables.paired_stats(au("score"), zero)
  vs = {b: tables.paired_stats(au("score"), au(b)) for b in BASELINES}
  top = tables.paired_stats(sel("score", 0.5), sel("score", 1.0))
  parts = {p: tables.paired_stats(au(p), zero + 0.5) for p in PARTS}
  above_all = all(
      (au("score") > au(b)).all() for b in BASELINES
      if not np.isnan(au(b)).any())
  v_auroc = tables.verdict(score, TARGET_AUROC)
  v_top = tables.verdict(top, TARGET_TOP_HALF)
  strongest = max(PARTS, key=lambda p: parts[p]["mean"])
  recon = parts["reconstruction"]
  relations = {k: float(np.mean([r["error_relations"][k] for r in runs]))
               for k in runs[0]["error_relations"]}
  lines = [
      "# Which labelmaps to trust: the quality signals, measured",
      "",
      "Per image, on the reported split, each signal's AUROC for telling "
      "images above the split's median IoU from those below (0.5 is "
      "chance), and the split mIoU of the most-trusted images by the "
      "combined score (a logistic regression of the parts fitted on the "
      "selection split; `dis_tf/research/quality_study.py` says how each "
      f"part is computed). Splits: {runs[0]['splits'][0]} (fit) and "
      f"{runs[0]['splits'][1]} (reported); test-time update "
      f"{runs[0]['latent_update']}; reconstruction drop over "
      f"{result['t_steps']} steps.",
      "",
      f"Produced by `{command}`.",
      "",
      _table(header, rows),
      "",
      "Paired per seed (hundredths of AUROC, mIoU points; "
      + tables.STD_NOTE + ")",
      "",
      f"- Combined score AUROC: {tables.paired_text(score)}.",
  ]
  for b in BASELINES:
    lines.append(f"- Score minus {b}: {tables.paired_text(vs[b])}.")
  for p in PARTS:
    lines.append(f"- {p} minus chance (50): {tables.paired_text(parts[p])}.")
  lines += [
      f"- Most-trusted 50% minus the whole split (mIoU): "
      f"{tables.paired_text(top)}.",
      "",
  ]
  served = _served_lines(result)
  remedies = quality_remedies.section(result, TARGET_TOP_HALF, TARGET_AUROC)
  lines += served["lines"] + remedies["lines"] + [
      "## Targets",
      "",
      tables.TARGET_RULE,
      "",
      f"- The study's combined score's AUROC >= 0.80: **{v_auroc}**.",
      f"- Above both baselines in every seed: **"
      f"{'met' if above_all else 'missed'}**.",
      f"- The most-trusted 50% >= the whole split + {TARGET_TOP_HALF:.0f} "
      f"mIoU: **{v_top}**.",
  ] + served["targets"] + [
      "",
      "## Reading",
      "",
      f"- The strongest single part is {strongest} "
      f"({tables.paired_text(parts[strongest])} over chance).",
      "- The reconstruction error at t = 0 " + reading.by_interval(
          recon, "ranks the labelmaps on held-out images: images it "
          + ("reconstructs better" if np.mean(_per_seed(
              runs, "signs", "reconstruction")) < 0 else
             "reconstructs worse") + " have better labelmaps.",
          "does not keep, on the reported split, the direction it had on "
          "the selection split (its oriented AUROC is below 0.5).",
          "carries no resolved signal about the labelmap (its oriented "
          "AUROC's interval contains 0.5).")
      + f" Of the wrongly labelled pixels, {100 * relations['same_hue']:.0f}"
      "% are confusions between two classes of one hue and "
      f"{100 * relations['background']:.0f}% involve background "
      "(mean over seeds); a same-hue swap decodes to about the same colours, "
      + ("so what the reconstruction ranks by is the other errors."
         if recon["low"] > 0 else "so the reconstruction cannot see it."),
  ] + served["reading"] + remedies["reading"]
  return "\n".join(lines) + "\n"


def _served_lines(result):
  """The page's section on the served score, and its target lines (none
  for a JSON written before the score was served)."""
  runs = [r.get("served") for r in result["runs"]]
  if not all(runs):
    return {"lines": [], "targets": [], "reading": []}
  n = len(runs)
  au = lambda key: np.asarray([r["auroc"][key] for r in runs])
  sel = lambda key, c: np.asarray([r["selective"][key][f"{c:g}"]
                                   for r in runs])
  rows = [[seed, r["t_test"], "yes" if r["fitted"] else "no (fallback)",
           f"{r['auroc']['score']:.3f}", f"{r['auroc']['max_probability']:.3f}"]
          + [f"{100 * r['selective']['score'][f'{c:g}']:.1f}"
             for c in COVERAGES]
          for seed, r in zip(result["seeds"], runs)]
  header = (["seed", "t_test", "fitted", "score", "max_probability"]
            + [f"mIoU top {int(100 * c)}%" for c in COVERAGES])
  score = tables.paired_stats(au("score"), np.zeros(n))
  vs = tables.paired_stats(au("score"), au("max_probability"))
  top = tables.paired_stats(sel("score", 0.5), sel("score", 1.0))
  lines = [
      "## The served score",
      "",
      "The score every prediction signature, `Segmentation.quality` and "
      "`predictions.jsonl` carry (`dis_tf/quality.py`): the parts "
      + ", ".join(quality.PARTS) + " of the served prediction (fitted "
      "into the canvas, at the run's selected t_test), in a logistic "
      "regression fitted on the selection split by `quality.fit`, as "
      "`tools/evaluate.py --select_t_test` records it. The reconstruction "
      "drop is not a part: `serving_default` runs no extra steps to "
      "measure it. AUROC on the reported split against the served "
      "labelmaps' own median IoU; max_probability is the same labelmaps' "
      "mean max-softmax probability.",
      "",
      _table(header, rows),
      "",
      f"- Served score AUROC: {tables.paired_text(score)}.",
      f"- Served score minus max_probability: {tables.paired_text(vs)}.",
      f"- Most-trusted 50% minus the whole split (mIoU): "
      f"{tables.paired_text(top)}.",
      "",
  ]
  reading_lines = []
  if all("oracle" in r["selective"] for r in runs):
    # How far any ranking could lift the most-trusted half: the split's own
    # per-image IoU spread bounds the +10 target, whatever the score.
    oracle = tables.paired_stats(sel("oracle", 0.5), sel("oracle", 1.0))
    lines.insert(-1, "- Most-trusted 50% by each image's own IoU (the "
                 "oracle ranking) minus the whole split (mIoU): "
                 f"{tables.paired_text(oracle)}.")
    share = top["mean"] / oracle["mean"] if oracle["mean"] > 0 else 0.0
    reach = (f"the served score's ranking gets {100 * share:.0f}% of that "
             "gain (mean over seeds)")
    if oracle["high"] < TARGET_TOP_HALF:
      text = ("so the +{:.0f} target is beyond any ranking of these images: "
              "their IoUs are not spread widely enough, and {}.")
    elif oracle["low"] > TARGET_TOP_HALF:
      text = ("so the +{:.0f} target is within a ranking's reach, and {}.")
    else:
      text = ("an interval that contains the +{:.0f} target, and {}.")
    reading_lines.append(
        "- Ranking the reported images by their own IoU, which no score "
        "can know, lifts the most-trusted half by "
        f"{oracle['mean']:+.1f} mIoU over the whole split, "
        + text.format(TARGET_TOP_HALF, reach))
  if all("trusted_half" in r for r in runs):
    half = lambda key, what: np.asarray(
        [r["trusted_half"][key][what] for r in runs], np.float64)
    image = tables.paired_stats(half("score", "image_mean"), np.zeros(n))
    lower, oracle_lower = (half("score", "classes_lower").mean(),
                           half("oracle", "classes_lower").mean())
    text = ("- Measured as the mean per-image IoU, the quantity the score is "
            "fitted to rank, the most-trusted half gains "
            f"{tables.paired_text(image)} over the whole split. ")
    if image["low"] > top["high"] and lower > oracle_lower:
      text += (
          "The split mIoU gains less because it weighs each class once: in "
          f"the score's trusted half {lower:.1f} classes (mean over seeds) "
          "have a lower IoU than over the whole split, against "
          f"{oracle_lower:.1f} in the oracle's half. Those classes keep a "
          "few images in the half that the score trusts though they are "
          "wrong, and with few images each such error moves the class's "
          "IoU a long way.")
    elif image["low"] <= top["high"]:
      text += ("That is not resolved as more than the split mIoU's gain: "
               "the split mIoU hides little of the score's ranking here.")
    else:
      text += (
          "That is more than the split mIoU's gain, but the score's half "
          f"lowers no more classes ({lower:.1f}, mean over seeds) than the "
          f"oracle's ({oracle_lower:.1f}): the classes weighed once do not "
          "explain the difference.")
    reading_lines.append(text)
  above = bool((au("score") > au("max_probability")).all())
  targets = [
      f"- The served score's AUROC >= 0.80: "
      f"**{tables.verdict(score, TARGET_AUROC)}**.",
      f"- The served score above max_probability in every seed: "
      f"**{'met' if above else 'missed'}**.",
      f"- The served score's most-trusted 50% >= the whole split + "
      f"{TARGET_TOP_HALF:.0f} mIoU: **{tables.verdict(top, TARGET_TOP_HALF)}"
      "**.",
  ]
  return {"lines": lines, "targets": targets, "reading": reading_lines}


def _table(header, rows):
  out = ["| " + " | ".join(map(str, header)) + " |",
         "|" + "---|" * len(header)]
  out += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(out)


def write(result, output, command):
  """Writes the page and, next to it, its JSON (same name, .json)."""
  return tables.write_page(result, output, command, format_page)


def load(path):
  """(result, command) of a JSON written by `write`."""
  return tables.load_page(path, ("seeds", "t_steps", "runs"),
                          "tools/quality_study.py")
