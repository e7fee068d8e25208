"""Per-row numbers of the ablation: mIoU per setting and seed, the validated
t_test, and paired per-seed differences (used by every results page).

Every spread is the sample standard deviation over seeds (ddof=1), and every
paired mean comes with its 90% Student t interval (`paired_stats`); a target
on a paired mean is judged by `verdict` (the rule is `TARGET_RULE`).
"""

import json
import os

import numpy as np

from dis_tf import atomic
from dis_tf import errors
from dis_tf import selection
from dis_tf.research import ablation


# Printed once on each page that shows a "±".
STD_NOTE = ("± is the sample standard deviation over seeds (ddof=1); a "
            "paired difference is printed as its mean with the sample sd, "
            "the 90% Student t interval of the mean and the seeds ahead / "
            "behind.")
TARGET_RULE = (
    "A target on a paired per-seed mean difference is **met** when the "
    "lower end of the mean's 90% t interval is above the threshold, "
    "**missed** when the upper end is below it (or a per-seed condition "
    "fails), and **not resolved** when the interval contains the "
    "threshold (one seed gives no interval).")


def mean_std(values):
  """Mean and sample std (ddof=1; 0 for a single value), NaNs left out."""
  values = np.asarray(values, dtype=np.float64)
  values = values[~np.isnan(values)]
  std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
  return float(np.mean(values)), std


def _miou(per_class):
  values = np.asarray([np.nan if v is None else v for v in per_class],
                      dtype=np.float64)
  return float(np.nanmean(values)), values


def miou_table(seed_results, plan, split="val"):
  """{(row, t): per-seed mIoU, its mean / std and per-class means}."""
  rows = {}
  for name in ablation.setting_names(plan) + ["ensemble"]:
    for t in plan.t_tests:
      mious, per_class = zip(*[_miou(r[split][name][str(t)])
                               for r in seed_results])
      rows[(name, t)] = {
          "miou": mean_std(mious),
          "per_seed": np.asarray(mious),
          "per_class": np.nanmean(np.stack(per_class), axis=0),
      }
  return rows


def validated(seed_results, plan):
  """Each row's t_test per seed, chosen on the selection split.

  Returns:
    {row: {"t": [t per seed], "per_seed": [reported mIoU at that t],
    "select": [selection mIoU at that t]}}, and the best DIS t_train
    (highest mean selection mIoU at the validated t_test).
  """
  out = {}
  for name in ablation.setting_names(plan) + ["ensemble"]:
    chosen, reported, selected = [], [], []
    for r in seed_results:
      scores = {t: _miou(r["select"][name][str(t)])[0] for t in plan.t_tests}
      t = selection.choose_t_test(scores)
      chosen.append(t)
      selected.append(scores[t])
      reported.append(_miou(r["val"][name][str(t)])[0])
    out[name] = {"t": chosen, "per_seed": np.asarray(reported),
                 "select": np.asarray(selected)}
  best = max(plan.t_trains,
             key=lambda t: out[f"DIS t_train={t}"]["select"].mean())
  return out, best


# Two-sided 90% Student t quantiles (0.95) by degrees of freedom; the
# normal quantile beyond the table.
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943,
        7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812, 15: 1.753, 20: 1.725,
        30: 1.697}


def _t95(df):
  return _T95.get(df) or next((v for k, v in sorted(_T95.items())
                               if k >= df), 1.645)


def paired_stats(a, b):
  """Per-seed a - b (points, x100): mean, sample sd, 90% t interval, signs.

  Returns:
    {"mean", "sd" (ddof=1), "low", "high" (90% t interval of the mean; NaN
    for one seed), "ahead", "behind" (seeds, at the printed 0.1 precision:
    a rescored identical model differs by float noise), "n", "per_seed"}.
  """
  d = 100.0 * (np.asarray(a, np.float64) - np.asarray(b, np.float64))
  n = d.size
  sd = float(d.std(ddof=1)) if n > 1 else float("nan")
  half = _t95(n - 1) * sd / np.sqrt(n) if n > 1 else float("nan")
  shown = np.round(d, 1)
  return {"mean": float(d.mean()), "sd": sd, "low": float(d.mean() - half),
          "high": float(d.mean() + half), "ahead": int(np.sum(shown > 0)),
          "behind": int(np.sum(shown < 0)), "n": int(n),
          "per_seed": [float(x) for x in d]}


def paired_text(p, per_seed=False):
  """'+1.2 (sd 0.8, 90% CI [+0.4, +2.0]; ahead 4, behind 1 of 5)'."""
  spread = ("one seed, no interval" if p["n"] < 2 else
            f"sd {p['sd']:.1f}, 90% CI [{p['low']:+.1f}, {p['high']:+.1f}]")
  seeds = ("; per seed " + ", ".join(f"{x:+.1f}" for x in p["per_seed"])
           if per_seed else "")
  return (f"{p['mean']:+.1f} ({spread}; ahead {p['ahead']}, behind "
          f"{p['behind']} of {p['n']}{seeds})")


def paired(a, b):
  """Per-seed a - b as text: `paired_text` with the per-seed values."""
  return paired_text(paired_stats(a, b), per_seed=True)


def verdict(p, threshold, seeds_ok=True):
  """"met" / "missed" / "not resolved" of a paired mean under `TARGET_RULE`.

  Args:
    p: `paired_stats` (points).
    threshold: the target's threshold on the mean (points).
    seeds_ok: a per-seed condition of the target (e.g. ahead in every
      seed); False makes it missed whatever the interval.
  """
  if not seeds_ok or p["high"] < threshold:
    return "missed"
  if p["low"] > threshold:
    return "met"
  return "not resolved"


def combined(verdicts):
  """One verdict of several parts: missed if any, met if all, else not
  resolved."""
  if "missed" in verdicts:
    return "missed"
  return "met" if all(v == "met" for v in verdicts) else "not resolved"


def write_page(result, output, command, format_page):
  """Writes `format_page(result, command)` to `output` and, next to it, the
  numbers behind it as JSON (same name, .json), from which `load_page`
  re-renders the page. Returns the page."""
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  atomic.write_text(os.path.splitext(output)[0] + ".json",
                    json.dumps(dict(result, command=command)))
  page = format_page(result, command)
  atomic.write_text(output, page)
  return page


def load_page(path, keys, tool):
  """(result, command) of a JSON written by `write_page`; a file that is not
  one (unreadable, or without `keys`) is a UserError naming `tool`."""
  try:
    with open(path) as f:
      saved = json.load(f)
    command = saved.pop("command")
    for key in keys:
      saved[key]  # pylint: disable=pointless-statement
  except (OSError, ValueError, KeyError, AttributeError) as e:
    raise errors.UserError(f"{path}: not a JSON of {tool} ({e!r}).") from e
  return saved, command
