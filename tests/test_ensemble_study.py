"""The ensemble study (issue 26, point 4): ensembles of an ablation's models
against their best member, and its page's computed reading."""

import copy
import json

import numpy as np
import pytest

from dis_tf import errors
from dis_tf import evaluation
from dis_tf import selection
from dis_tf.data import pipeline
from dis_tf.research import ensemble_page
from dis_tf.research import ensemble_study as study


def test_ensembles_pair_t_trains_and_cycle_over_seeds():
  pairs = study.pair_ensembles([3, 4], (10, 30))
  assert [p["members"] for p in pairs] == [[[3, 10], [3, 30]],
                                          [[4, 10], [4, 30]]]
  seeds = study.seed_ensembles([0, 1, 2], [5], 2)
  assert [e["members"] for e in seeds] == [[[0, 5], [1, 5]], [[1, 5], [2, 5]],
                                          [[2, 5], [0, 5]]]
  with pytest.raises(errors.UserError, match="--members=4"):
    study.seed_ensembles([0, 1, 2], [5], 4)


def _confusion(mask, labels, num_classes):
  valid = mask != 255
  return np.bincount(num_classes * mask[valid] + labels[valid],
                     minlength=num_classes ** 2).reshape(num_classes, -1)


def test_scores_average_members_and_count_disagreement_on_valid_pixels():
  rng = np.random.default_rng(0)
  ensembles = study.pair_ensembles([0], (1, 2))
  scores = study.Scores(ensembles, num_classes=3)
  reference = {"0/1": 0, "0/2": 0, "ensemble": 0}
  disagree = pixels = 0
  for _ in range(3):
    mask = rng.integers(0, 3, (5, 6))
    mask[0] = 255
    p = {k: rng.dirichlet(np.ones(3), (5, 6)) for k in ("0/1", "0/2")}
    scores.update(mask, p)
    labels = {k: v.argmax(-1) for k, v in p.items()}
    labels["ensemble"] = (p["0/1"] + p["0/2"]).argmax(-1)
    for k in reference:
      reference[k] = reference[k] + _confusion(mask, labels[k], 3)
    valid = mask != 255
    disagree += np.sum((labels["0/1"] != labels["0/2"]) & valid)
    pixels += valid.sum()
  result = scores.result()
  for k in ("0/1", "0/2"):
    assert result["members"][k] == pytest.approx(
        selection.mean_iou_of(reference[k]))
  assert result["ensembles"][0] == pytest.approx(
      selection.mean_iou_of(reference["ensemble"]))
  assert result["disagreement"][0] == pytest.approx(disagree / pixels)
  assert 0 < result["disagreement"][0] < 1


def test_best_member_is_chosen_on_the_selection_split():
  ensembles = study.pair_ensembles([0], (1, 2))
  select = {"members": {"0/1": 0.5, "0/2": 0.4}, "ensembles": [0.45],
            "disagreement": [0.1]}
  val = {"members": {"0/1": 0.3, "0/2": 0.6}, "ensembles": [0.5],
         "disagreement": [0.2]}
  row, = study.summarise(ensembles, select, val)
  # The reported split prefers 0/2; the selection split chose 0/1.
  assert row["best"] == "0/1" and row["ensemble_val"] == 0.5
  assert row["disagreement"] == 0.2
  assert ensemble_page._picked_wrong([row]) == 1


def test_best_seed_t_train_is_the_best_mean_on_selection():
  rows = [{"kind": "seeds", "t_train": t, "members_select": {
      f"{s}/{t}": v for s, v in enumerate(values)}}
          for t, values in ((5, [0.5, 0.4]), (10, [0.6, 0.2]),
                            (30, [0.45, 0.45]))]
  assert study.best_seed_t_train(rows) == 5
  rows[2]["members_select"] = {"0/30": 0.5, "1/30": 0.5}
  assert study.best_seed_t_train(rows) == 30


def test_a_workdir_without_scores_names_the_file(tmp_path):
  (tmp_path / "seed_0").mkdir()
  with pytest.raises(errors.UserError, match="scores.json"):
    study.served_setting(str(tmp_path / "seed_0"), 10)
  with pytest.raises(errors.MissingFileError, match="seed_1"):
    study._t_trains(str(tmp_path), 1)


def _row(kind, name, members_val, best, ensemble, disagreement, t_train=None):
  return {"kind": kind, "name": name, "t_train": t_train, "best": best,
          "members_val": members_val, "members_select": members_val,
          "ensemble_val": ensemble, "ensemble_select": ensemble,
          "disagreement": disagreement}


def _result(pair_gain, seed_gain, pair_disagreement=0.1,
            seed_disagreement=0.2):
  """Five seeds; the pair ensembles' members are 0.5 and 0.46 (best 0.5,
  lead +2 over their mean), the seed ensembles' 0.5, 0.49, 0.48 (lead +1);
  each ensemble is its members' mean plus the gain (points)."""
  rows = []
  for s in range(5):
    jitter = 0.002 * s
    rows.append(_row("t_train pair", f"p{s}", {f"{s}/10": 0.5,
                                               f"{s}/30": 0.46},
                     f"{s}/10", 0.48 + pair_gain / 100 + jitter,
                     pair_disagreement))
    rows.append(_row("seeds", f"s{s}", {"a": 0.5, "b": 0.49, "c": 0.48},
                     "a", 0.49 + seed_gain / 100 + jitter,
                     seed_disagreement, t_train=10))
  return {"seeds": list(range(5)), "pair": [10, 30], "members": 3,
          "t_trains": [10], "splits": ["val[:100]", "val[100:]"],
          "served": {"0/10": [0, None]}, "rows": rows, "best_t_train": 10}


@pytest.mark.parametrize("pair_gain, seed_gain, pair_verdict, seed_verdict", [
    (4.0, 3.0, "met", "met"),
    (1.0, 0.0, "missed", "missed"),
])
def test_reading_follows_the_numbers(pair_gain, seed_gain, pair_verdict,
                                     seed_verdict):
  lines = ensemble_page.reading(_result(pair_gain, seed_gain))
  pair_target, pair_why, seed_target, overlap, seed_why, more = lines
  assert f"**{pair_verdict}**" in pair_target
  assert f"**{seed_verdict}**" in seed_target
  ahead = "averaging gains more than the best member leads"
  behind = "the best member leads the members' mean by more"
  assert (ahead in pair_why) == (pair_verdict == "met")
  assert (behind in pair_why) == (pair_verdict != "met")
  assert (ahead in seed_why) == (seed_verdict == "met")
  assert "member of 3 of these ensembles" in overlap
  assert "Members from training seeds disagree on more" in more


def test_reading_disagreement_branch_flips():
  lines = ensemble_page.reading(_result(4.0, 3.0, pair_disagreement=0.3,
                                        seed_disagreement=0.1))
  assert "Members from t_train 10 + 30 disagree on more pixels (30.0%" in (
      lines[-1])


def test_page_round_trips_through_its_json(tmp_path):
  result = _result(4.0, 3.0)
  output = tmp_path / "ENSEMBLE.md"
  page = ensemble_page.write(copy.deepcopy(result), str(output), "cmd")
  loaded, command = ensemble_page.load(str(tmp_path / "ENSEMBLE.json"))
  assert command == "cmd" and ensemble_page.format_page(loaded, command) == (
      page)
  assert ("| p0 | 0/10: 50.0, 0/30: 46.0 | 0/10 | 52.0 | +2.0 | +4.0 | "
          "10.0% |") in page


def test_study_scores_an_ablation_workdir(tmp_path, tiny_run, mini_benchmark):
  """A workdir of tiny untrained models (two seeds, t_train 1 and 2): the
  study's mIoUs equal a reference computed here from `evaluation.predict`
  at each member's served setting."""
  workdir = tmp_path / "work"
  served = {"0/1": (0, None), "0/2": (1, 0.0), "1/1": (0, None),
            "1/2": (0, None)}
  for seed in (0, 1):
    seed_dir = workdir / f"seed_{seed}"
    for t in (1, 2):
      tiny_run(str(seed_dir / f"t_train_{t}"), seed=10 * seed + t)
    (seed_dir / "scores.json").write_text(json.dumps({"result": {"served": {
        f"DIS t_train={t}": {"t_test": served[f"{seed}/{t}"][0],
                             "tag_refinement": served[f"{seed}/{t}"][1]}
        for t in (1, 2)}}}))
  overrides = {"data.voc_dir": mini_benchmark["voc_dir"],
               "data.weak_dir": mini_benchmark["weak_dir"],
               "data.data_dir": mini_benchmark["data_dir"],
               "data.select_split": "val[:2]", "data.eval_split": "val[2:]"}
  result = study.run_study(str(workdir), [0, 1], pair=(1, 2), members=2,
                           data_overrides=overrides)
  assert result["t_trains"] == [1, 2] and result["splits"] == [
      "val[:2]", "val[2:]"]
  assert {k: tuple(v) for k, v in result["served"].items()} == served
  # Reference: each member's prediction at its served setting, averaged.
  from dis_tf import model_dir as model_dir_lib
  config, _ = model_dir_lib.load(str(workdir / "seed_0" / "t_train_1"),
                                 overrides)
  models = {f"{s}/{t}": model_dir_lib.load(
      str(workdir / f"seed_{s}" / f"t_train_{t}"), overrides)[1]
            for s in (0, 1) for t in (1, 2)}
  num_classes = config.model.num_classes
  for row in result["rows"]:
    keys = [f"{s}/{t}" for s, t in row["members"]]
    matrices = {k: 0 for k in keys + ["ensemble"]}
    for example in pipeline.eval_dataset(config, "val[2:]"):
      mask = np.asarray(example["mask"])[0]
      p = {}
      for k in keys:
        t, refinement = served[k]
        p[k] = evaluation.predict(models[k], example["image"], [t],
                                  refinements=[refinement])[t][
                                      "probabilities"]
        matrices[k] = matrices[k] + _confusion(mask, p[k].argmax(-1),
                                               num_classes)
      mean = np.mean([p[k] for k in keys], axis=0)
      matrices["ensemble"] = matrices["ensemble"] + _confusion(
          mask, mean.argmax(-1), num_classes)
    assert row["ensemble_val"] == pytest.approx(
        selection.mean_iou_of(matrices["ensemble"]), abs=1e-6)
    for k in keys:
      assert row["members_val"][k] == pytest.approx(
          selection.mean_iou_of(matrices[k]), abs=1e-6)
  assert len([r for r in result["rows"] if r["kind"] == "seeds"]) == 4
