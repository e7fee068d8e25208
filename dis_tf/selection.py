"""Choosing the served setting on a held-out split, with a margin.

What a model serves is the latent steps `t_test`, the final prediction
`tag_refinement` (off: softmax(u3); the paper's tag refinement; or a
calibrated one, sigmoid(v3 + b)) and, for t_test > 0, which latent blocks
the steps move (`latent.update`: "u1" with v1 frozen, "both" the paper's
step, or "per_pixel"; `dis_tf.modeling.latent.block_scales`). Test-time
steps, their update and the refinement can help or hurt a given model
(RESULTS.md "The served labelmap" and its diagnosis), so the setting is
chosen on a split held out from the one reported
(`DataConfig.select_split`, e.g. "val[:100]" of the synthetic benchmark,
reported on "val[100:]") by one rule:

1. The default is t_test = 0 with no refinement: the network's own plain
   prediction, and the simplest setting.
2. Every candidate (each t_test with each refinement and, for t_test > 0,
   each update) is scored on the selection split; the best one (ties go to
   fewer steps, then to the simpler update, u1 before both before
   per_pixel, then to the simpler refinement) is a non-default candidate.
3. It serves only when its paired gain over the default clears a margin:
   the lower end of a 90% paired bootstrap interval of the mIoU difference
   (images resampled with replacement, both settings on the same resample)
   must be above 0. Otherwise the default serves.
4. The recorded update is the best candidate's when it has steps; when
   the best candidate is t = 0 (where the update does nothing), it is the
   update of the best candidate with steps, by the same order. It is what
   `serving_steps` requests with steps > 0 get. No margin applies to it:
   every update is a departure from t = 0 alike, and rule 3 decides
   whether steps serve at all.

Why a bootstrap margin: on 100 selection images the candidates' gains are
about as large as the difference between two 100-image splits (on the
re-check benchmark the best-scoring t_test was -2.1 to +1.3 against t = 0 on
the reported split), and mIoU is a split-level ratio, so the paired
per-image resampling is what measures that noise for the pair compared.

The choice goes to the model_dir's `config.json` (`latent.t_test`,
`latent.tag_refinement`, `latent.update`), where the export and the demo
read their default; the scores and the interval behind it go to
`t_test_selection.json`.
"""

import os

import numpy as np

from dis_tf import atomic
from dis_tf import errors
from dis_tf import evaluation

SELECTION_FILENAME = "t_test_selection.json"
# The candidate final predictions: off, the paper's refinement, and two
# calibrated biases on v3 (sigmoid(v3 + b): b = 2 and 4 shrink the
# refinement of a classifier whose recall is low).
REFINEMENTS = (None, 0.0, 2.0, 4.0)
# The candidate test-time updates, simplest first (the tie order): v1
# frozen, the paper's step, and the per-pixel v1 step (a departure).
UPDATES = ("u1", "both", "per_pixel")
CONFIDENCE = 0.90
NUM_RESAMPLES = 2000
RULE = ("default t_test = 0 without refinement; the best-scoring candidate "
        f"serves only if the lower end of the {CONFIDENCE:.0%} paired "
        "bootstrap interval of its mIoU gain over the default "
        f"({NUM_RESAMPLES} resamples of the images) is above 0")
# Added to RULE in a decision that compared latent updates.
UPDATE_RULE = ("the update is the best-scoring candidate's with steps (ties: "
               "fewer steps, u1, both, per_pixel)")


def choose_t_test(scores):
  """The step count with the highest score; ties go to the fewer steps.

  Args:
    scores: {t_test: mIoU}.

  Returns:
    The chosen t_test (int).
  """
  if not scores:
    raise ValueError("choose_t_test: no scores.")
  best = max(scores.values())
  return min(int(t) for t, v in scores.items() if v == best)


def mean_iou_of(matrices):
  """mIoU of each confusion matrix of a [..., C, C] stack (NaN-free mean
  over the classes present, as `dis_tf.metrics.ConfusionMatrix.mean_iou`).
  """
  matrices = np.asarray(matrices, np.float64)
  tp = np.diagonal(matrices, axis1=-2, axis2=-1)
  union = matrices.sum(-2) + matrices.sum(-1) - tp
  present = union > 0
  iou = np.where(present, tp / np.where(present, union, 1.0), 0.0)
  count = present.sum(-1)
  return np.where(count > 0, iou.sum(-1) / np.maximum(count, 1), 0.0)


def bootstrap_gain(matrices_a, matrices_b, num_resamples=NUM_RESAMPLES,
                   confidence=CONFIDENCE, seed=0):
  """Paired bootstrap of mIoU(a) - mIoU(b) over the images of a split.

  Args:
    matrices_a: int [N, C, C] per-image confusion matrices of setting a.
    matrices_b: the same images under setting b.
    num_resamples: bootstrap resamples.
    confidence: two-sided interval level.
    seed: resampling seed (the interval is reproducible).

  Returns:
    {"gain": mIoU(a) - mIoU(b) on the split, "low", "high": the interval's
    ends, "confidence", "num_resamples", "num_images"}.
  """
  a = np.asarray(matrices_a, np.float64)
  b = np.asarray(matrices_b, np.float64)
  if a.shape != b.shape or a.ndim != 3 or not len(a):
    raise ValueError(f"bootstrap_gain: per-image matrices of one split "
                     f"expected, got shapes {a.shape} and {b.shape}.")
  n = len(a)
  rng = np.random.default_rng(seed)
  counts = np.zeros((num_resamples, n))
  np.add.at(counts, (np.arange(num_resamples)[:, None],
                     rng.integers(0, n, size=(num_resamples, n))), 1.0)
  diffs = (mean_iou_of(np.einsum("rn,nij->rij", counts, a))
           - mean_iou_of(np.einsum("rn,nij->rij", counts, b)))
  tail = (1.0 - confidence) / 2.0
  return {"gain": float(mean_iou_of(a.sum(0)) - mean_iou_of(b.sum(0))),
          "low": float(np.quantile(diffs, tail)),
          "high": float(np.quantile(diffs, 1.0 - tail)),
          "confidence": confidence, "num_resamples": num_resamples,
          "num_images": n}


def _key(key):
  """(t_test, refinement, update) of a candidate key; a 2-tuple key is a
  candidate of the model's own update (None)."""
  t, refinement, *update = key
  return int(t), refinement, (update[0] if update else None)


def _candidate_order(key):
  """Tie order: fewer steps first, then the simpler update (`UPDATES`
  order; None, the model's own, first), then off, then the smaller bias."""
  t, refinement, update = _key(key)
  rank = -1 if update is None else (
      UPDATES.index(update) if update in UPDATES else len(UPDATES))
  return (t, rank, -1.0 if refinement is None else refinement)


def _row_name(refinement, update, with_updates):
  name = evaluation.refinement_name(refinement)
  return f"{name}, {update}" if with_updates else name


def _score_table(scores):
  """{row: {t: mIoU}}: a row per refinement, or per "refinement, update"
  when candidates name updates (t = 0, which takes no step, in every row of
  its refinement)."""
  updates = sorted({k[2] for k in scores if k[2] is not None},
                   key=lambda u: _candidate_order((1, None, u)))
  refinements = sorted({k[1] for k in scores},
                       key=lambda r: _candidate_order((0, r, None)))
  t_tests = sorted({k[0] for k in scores})
  table = {}
  for refinement in refinements:
    for update in updates or [None]:
      row = {}
      for t in t_tests:
        key = (t, refinement, None if t == 0 else update)
        if key not in scores and t == 0:
          key = (t, refinement, update)
        if key in scores:
          row[str(t)] = scores[key]
      table[_row_name(refinement, update, bool(updates))] = row
  return table


def choose_setting(image_matrices, default=(0, None), **bootstrap_kwargs):
  """The margin rule of the module docstring.

  Args:
    image_matrices: {(t_test, tag_refinement) or (t_test, tag_refinement,
      update): int [N, C, C]} per-image confusion matrices on the selection
      split; must hold `default`. A t_test = 0 candidate needs no update.
    default: the (t_test, tag_refinement) that serves without evidence.
    **bootstrap_kwargs: passed to `bootstrap_gain`.

  Returns:
    {"t_test", "tag_refinement" (the served pair), "refinement" (its
    name), "update" (rule 4; None when no candidate names one), "default",
    "best" (the best-scoring candidate, as names; with its "update" when
    it names one), "taken" (whether the
    best replaced the default), "interval" (the best's `bootstrap_gain`
    over the default, None if the best is the default), "scores" ({row:
    {t: mIoU}}, a row per refinement, or per "refinement, update" when
    updates are compared; t = 0 is repeated in each update's row), "rule"}.
  """
  matrices = {_key(k): m for k, m in image_matrices.items()}
  default = _key(default)
  if default not in matrices:
    raise ValueError(f"choose_setting: the default {default[:2]} has no "
                     "scores.")
  scores = {k: float(mean_iou_of(np.asarray(m).sum(0)))
            for k, m in matrices.items()}
  top = max(scores.values())
  best = min((k for k, v in scores.items() if v == top), key=_candidate_order)
  interval = None
  chosen = default
  if best != default:
    interval = bootstrap_gain(matrices[best], matrices[default],
                              **bootstrap_kwargs)
    if interval["low"] > 0:
      chosen = best
  stepped = [k for k in scores if k[0] > 0 and k[2] is not None]
  update = best[2] if best[2] is not None else (
      min(stepped, key=lambda k: (-scores[k], _candidate_order(k)))[2]
      if stepped else None)
  table = _score_table(scores)
  name = evaluation.refinement_name
  return {"t_test": int(chosen[0]), "tag_refinement": chosen[1],
          "refinement": name(chosen[1]), "update": update,
          "default": {"t_test": default[0], "refinement": name(default[1])},
          "best": dict({"t_test": int(best[0]), "refinement": name(best[1])},
                       **({"update": best[2]} if best[2] else {})),
          "taken": chosen != default, "interval": interval, "scores": table,
          "rule": RULE if update is None else f"{RULE}; {UPDATE_RULE}"}


def select_setting(model, dataset, t_tests, num_classes=21,
                   refinements=REFINEMENTS, updates=UPDATES, batch_size=1):
  """Scores every (t_test, refinement, update) on `dataset`; chooses one.

  Args:
    model: a `DISModel` (its `latent_update` is restored afterwards).
    dataset: the held-out split (batch-1 evaluation dicts with masks).
    t_tests: candidate step counts (0 is added: it is the default).
    num_classes: classes.
    refinements: candidate `tag_refinement` values (None, the default,
      is added).
    updates: candidate test-time updates (`UPDATES`); empty: the model's
      own only. Each one re-runs the split (the backbone included).
    batch_size: images per latent batch (`evaluation.evaluate_model`).

  Returns:
    (the `choose_setting` decision, number of images).
  """
  t_tests = sorted(set(int(t) for t in t_tests) | {0})
  refinements = [None] + [r for r in refinements if r is not None]
  own = model.latent_update
  matrices, num_images = {}, 0
  try:
    for i, update in enumerate(list(updates) or [own]):
      model.latent_update = update
      # t = 0 takes no step, so it is scored once.
      scored = t_tests if i == 0 else [t for t in t_tests if t > 0]
      if not scored:
        break
      results = evaluation.evaluate_model(
          model, dataset, scored, num_classes=num_classes, log_every=0,
          refinements=refinements, per_image=True, batch_size=batch_size)
      if not results["num_images"]:
        raise errors.UserError("select_setting: the selection split has "
                               "no images.")
      num_images = results["num_images"]
      for s in results["settings"]:
        t = s["t_test"]
        matrices[(t, evaluation.parse_refinement(s["refinement"]),
                  update if t > 0 and updates else None)] = (
                      s["image_matrices"])
  finally:
    model.latent_update = own
  return choose_setting(matrices), num_images


def record_selection(config, decision, split, num_images):
  """Stores the chosen setting in `config.model_dir`'s config.json.

  Args:
    config: the run's `ExperimentConfig` (its `model_dir` is written).
    decision: a `choose_setting` result.
    split: the selection split's name.
    num_images: images scored.

  Returns:
    The path of the selection record.
  """
  config.latent.t_test = int(decision["t_test"])
  config.latent.tag_refinement = decision["tag_refinement"]
  if decision.get("update") is not None:
    config.latent.update = decision["update"]
  config.save(config.model_dir)
  path = os.path.join(config.model_dir, SELECTION_FILENAME)
  atomic.write_json(path, dict(decision, split=split,
                               num_images=int(num_images)), indent=2)
  return path


def apply(model, decision):
  """Sets the chosen final prediction and update on `model` (the t_test is
  passed to evaluation and export as a count)."""
  model.tag_refinement = decision["tag_refinement"]
  if decision.get("update") is not None:
    model.latent_update = decision["update"]


def describe(decision, split, num_images):
  """Lines saying which setting was chosen, from which scores, and why."""
  rows = list(decision["scores"])
  t_tests = sorted({t for row in decision["scores"].values() for t in row},
                   key=int)
  update = decision.get("update")
  header = "refinement, update" if update is not None else "refinement"
  lines = [f"Served setting chosen on {split} ({num_images} images held out "
           "from the reported split); mIoU per final prediction"
           + (", update" if update is not None else "") + " and t_test:",
           "",
           f"| {header} | " + " | ".join(f"t={t}" for t in t_tests) + " |",
           "|---|" + "---:|" * len(t_tests)]
  for name in rows:
    row = decision["scores"][name]
    lines.append(f"| {name} | " + " | ".join(
        f"{100 * row[t]:.1f}" if t in row else "-" for t in t_tests) + " |")
  best, default = decision["best"], decision["default"]
  best_text = f"t={best['t_test']}, refinement {best['refinement']}"
  if best.get("update") is not None:
    best_text += f", update {best['update']}"
  lines.append("")
  if decision["interval"] is None:
    lines.append(f"The default (t={default['t_test']}, refinement "
                 f"{default['refinement']}) scores best; it serves.")
  else:
    i = decision["interval"]
    verdict = ("above 0, so it serves" if decision["taken"] else
               "not above 0, so the default (t="
               f"{default['t_test']}, refinement {default['refinement']}) "
               "serves")
    lines.append(
        f"Best: {best_text}, {100 * i['gain']:+.1f} mIoU over the default; "
        f"{i['confidence']:.0%} paired bootstrap interval "
        f"[{100 * i['low']:+.1f}, {100 * i['high']:+.1f}]: its lower end is "
        f"{verdict}.")
  served = (f"Served: t_test = {decision['t_test']}, refinement "
            f"{decision['refinement']}")
  if update is not None:
    served += (f"; latent update {update}" + (
        "" if decision["t_test"] else " (for requests with steps)"))
  lines.append(served + ".")
  return "\n".join(lines)
