"""Per-row numbers of the ablation: mIoU per setting and seed, the validated
t_test, and paired per-seed differences (used by every results page)."""

import numpy as np

from dis_tf import selection
from dis_tf.research.ablation import setting_names


def _mean_std(values):
  values = np.asarray(values, dtype=np.float64)
  return float(np.nanmean(values)), float(np.nanstd(values))


def _miou(per_class):
  values = np.asarray([np.nan if v is None else v for v in per_class],
                      dtype=np.float64)
  return float(np.nanmean(values)), values


def miou_table(seed_results, plan, split="val"):
  """{(row, t): per-seed mIoU, its mean / std and per-class means}."""
  rows = {}
  for name in setting_names(plan) + ["ensemble"]:
    for t in plan.t_tests:
      mious, per_class = zip(*[_miou(r[split][name][str(t)])
                               for r in seed_results])
      rows[(name, t)] = {
          "miou": _mean_std(mious),
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
  for name in setting_names(plan) + ["ensemble"]:
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


def paired(a, b):
  """Per-seed a - b as 'mean ± std, ahead in k of n seeds (k' behind)'."""
  d = 100.0 * (np.asarray(a) - np.asarray(b))
  # Signs as printed (0.1 mIoU): a rescored identical model differs by
  # float noise, which would otherwise count as ahead or behind.
  shown = np.round(d, 1)
  return (f"{d.mean():+.1f} ± {d.std():.1f} paired per seed, ahead in "
          f"{int(np.sum(shown > 0))} of {d.size} seeds, behind in "
          f"{int(np.sum(shown < 0))} (per seed: "
          + ", ".join(f"{x:+.1f}" for x in d) + ")")
