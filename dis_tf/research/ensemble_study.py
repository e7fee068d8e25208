"""Ensembles of the members issue 26 (point 4) names, against their best.

RESULTS.md's ensemble averages the DIS settings of one seed (t_train 5, 10
and 30), members that differ in accuracy: its best member often leads the
members' mean by more than averaging gains. This study scores, from the
models an ablation run (`tools/ablation.py`) already trained, the two
kinds of ensembles the issue names as closer in accuracy (whether they are
is measured: on the demo's benchmark the training seeds are not):

* "t_train pair": per seed, two t_train values of that seed (default 10 and
  30, the paper's ensemble of Table 3).
* "seeds": per t_train, the models of `members` consecutive training seeds
  (seed i with i + 1, ..., cyclically): one t_train trained from several
  initialisations (and their own stage 1).

Every member predicts at the setting the ablation serves for it (its
(t_test, refinement), chosen on the selection split and recorded in the
seed's scores.json); an ensemble averages its members' probabilities at the
original image size (`evaluation.predict`, as RESULTS.md's ensemble) and
takes the argmax. Each ensemble is paired with its best member, the member
with the highest mIoU on the selection split (so the comparison never looks
at the reported split to pick the member), and with the mean of its
members. The seed ensembles' t_train reported against the target is the one
with the highest mean selection mIoU over seeds. Mechanism: the share of
reported pixels where the members' labels differ (no averaging can change a
pixel on which every member agrees).
"""

import json
import os

import numpy as np

from dis_tf import errors
from dis_tf import metrics as dis_metrics
from dis_tf import selection


def pair_ensembles(seeds, pair):
  """One "t_train pair" ensemble per seed: [{"kind", "name", "members"}]."""
  return [{"kind": "t_train pair", "name": f"seed {s}: t_train "
           + " + ".join(str(t) for t in pair),
           "members": [[s, int(t)] for t in pair]} for s in seeds]


def seed_ensembles(seeds, t_trains, members):
  """Per t_train, one ensemble per seed i of seeds i, i + 1, ... (cyclic)."""
  if not 2 <= members <= len(seeds):
    raise errors.UserError(
        f"--members={members}: an ensemble of training seeds needs 2 to "
        f"{len(seeds)} members (the seeds given).")
  out = []
  for t in t_trains:
    for i in range(len(seeds)):
      chosen = [seeds[(i + j) % len(seeds)] for j in range(members)]
      out.append({"kind": "seeds", "t_train": int(t),
                  "name": f"t_train {t}: seeds "
                  + ", ".join(str(s) for s in chosen),
                  "members": [[s, int(t)] for s in chosen]})
  return out


def member_key(member):
  seed, t_train = member
  return f"{seed}/{t_train}"


class Scores:
  """Confusion matrices of every member and ensemble, and the members'
  pixel disagreement per ensemble, accumulated image by image."""

  def __init__(self, ensembles, num_classes):
    self.ensembles = ensembles
    self.num_classes = num_classes
    keys = {member_key(m) for e in ensembles for m in e["members"]}
    self.members = {k: dis_metrics.ConfusionMatrix(num_classes)
                    for k in sorted(keys)}
    self.combined = [dis_metrics.ConfusionMatrix(num_classes)
                     for _ in ensembles]
    self.disagree = np.zeros(len(ensembles), np.int64)
    self.pixels = 0

  def update(self, mask, probabilities):
    """One image: `mask` [H, W] (255 ignored) and {member key: [H, W, C]}."""
    mask = np.asarray(mask)
    labels = {k: np.argmax(p, -1) for k, p in probabilities.items()}
    for key, matrix in self.members.items():
      matrix.update(mask, labels[key])
    valid = mask != dis_metrics.IGNORE_LABEL
    self.pixels += int(valid.sum())
    for i, ensemble in enumerate(self.ensembles):
      keys = [member_key(m) for m in ensemble["members"]]
      mean = np.mean([probabilities[k] for k in keys], axis=0)
      self.combined[i].update(mask, np.argmax(mean, -1))
      stack = np.stack([labels[k] for k in keys])
      self.disagree[i] += int(((stack != stack[0]).any(0) & valid).sum())

  def result(self):
    """{"members": {key: mIoU}, "ensembles": [mIoU], "disagreement": [share
    of valid pixels where the members' labels differ]}."""
    miou = lambda m: float(selection.mean_iou_of(m.matrix))
    return {"members": {k: miou(m) for k, m in self.members.items()},
            "ensembles": [miou(m) for m in self.combined],
            "disagreement": [float(d) / max(self.pixels, 1)
                             for d in self.disagree]}


def summarise(ensembles, select, val):
  """Each ensemble with its best member (by `select`) and its scores.

  Args:
    ensembles: the definitions (`pair_ensembles`, `seed_ensembles`).
    select, val: `Scores.result()` on the selection and reported splits.

  Returns:
    [dict(ensemble, best=member key, ensemble_select / ensemble_val,
    members_select / members_val ({key: mIoU}), disagreement)].
  """
  out = []
  for i, ensemble in enumerate(ensembles):
    keys = [member_key(m) for m in ensemble["members"]]
    # Ties go to the first member listed.
    best = max(keys, key=lambda k: (select["members"][k], -keys.index(k)))
    out.append(dict(ensemble, best=best,
                    ensemble_select=select["ensembles"][i],
                    ensemble_val=val["ensembles"][i],
                    members_select={k: select["members"][k] for k in keys},
                    members_val={k: val["members"][k] for k in keys},
                    disagreement=val["disagreement"][i]))
  return out


def best_seed_t_train(rows):
  """The t_train whose single models have the highest mean selection mIoU
  over seeds (ties: the smaller t_train), from `summarise` rows."""
  by_t = {}
  for row in rows:
    if row["kind"] == "seeds":
      for key, value in row["members_select"].items():
        by_t.setdefault(row["t_train"], {})[key] = value
  return min(by_t, key=lambda t: (-np.mean(list(by_t[t].values())), t))


def served_setting(seed_dir, t_train):
  """(t_test, tag_refinement) the ablation serves for a seed's DIS model."""
  path = os.path.join(seed_dir, "scores.json")
  try:
    with open(path) as f:
      served = json.load(f)["result"]["served"][f"DIS t_train={t_train}"]
    return int(served["t_test"]), served["tag_refinement"]
  except (OSError, ValueError, KeyError) as e:
    raise errors.UserError(
        f"{path}: no served setting of DIS t_train={t_train} (a finished "
        f"tools/ablation.py seed?): {e!r}") from e


def run_study(workdir, seeds, pair=(10, 30), members=3,
              data_overrides=None, limit=None):
  """Scores the ensembles of an ablation workdir on both splits.

  Args:
    workdir: the ablation's --workdir (seed_<s>/t_train_<t> model dirs).
    seeds: the seeds (ints) to use, in order.
    pair: the two t_train values of the "t_train pair" ensembles.
    members: members of a seed ensemble.
    data_overrides: config overrides (the benchmark's paths), or None.
    limit: at most this many images per split (tests).

  Returns:
    A JSON-able dict: {"seeds", "pair", "members", "t_trains", "splits",
    "served" ({member key: [t_test, refinement]}), "rows" (`summarise`),
    "best_t_train"}.
  """
  from dis_tf import evaluation  # pylint: disable=g-import-not-at-top
  from dis_tf import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
  from dis_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  t_trains = sorted({int(t) for t in pair} | _t_trains(workdir, seeds[0]))
  ensembles = (pair_ensembles(seeds, pair)
               + seed_ensembles(seeds, t_trains, members))
  models, served, config = {}, {}, None
  for seed in seeds:
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    for t in t_trains:
      key = member_key([seed, t])
      config, models[key] = model_dir_lib.load(
          os.path.join(seed_dir, f"t_train_{t}"), data_overrides)
      served[key] = served_setting(seed_dir, t)
  results = {}
  for split_key, split in (("select", config.data.select_split),
                           ("val", config.data.eval_split)):
    scores = Scores(ensembles, config.model.num_classes)
    for index, example in enumerate(pipeline.eval_dataset(config, split)):
      if limit is not None and index >= limit:
        break
      probabilities = {}
      for key, model in models.items():
        t_test, refinement = served[key]
        out = evaluation.predict(model, example["image"], [t_test],
                                 refinements=[refinement])
        probabilities[key] = out[t_test]["probabilities"]
      scores.update(np.asarray(example["mask"])[0], probabilities)
    results[split_key] = scores.result()
  rows = summarise(ensembles, results["select"], results["val"])
  return {"seeds": list(seeds), "pair": [int(t) for t in pair],
          "members": int(members), "t_trains": t_trains,
          "splits": [config.data.select_split, config.data.eval_split],
          "served": {k: list(v) for k, v in served.items()}, "rows": rows,
          "best_t_train": best_seed_t_train(rows)}


def _t_trains(workdir, seed):
  """The DIS t_train values trained in one seed's folder."""
  seed_dir = os.path.join(workdir, f"seed_{seed}")
  if not os.path.isdir(seed_dir):
    raise errors.MissingFileError(
        f"{seed_dir}: not a seed folder of tools/ablation.py.")
  return {int(name[len("t_train_"):]) for name in os.listdir(seed_dir)
          if name.startswith("t_train_") and name != "t_train_0"}
