"""The page of `dis_tf.research.ensemble_study` (ENSEMBLE.md).

Every sentence is a template filled with the study's numbers or a branch
chosen by them; tests/test_ensemble_study.py feeds numbers that flip each
branch.
"""

import numpy as np

from dis_tf.research import tables

KEYS = ("seeds", "pair", "members", "t_trains", "splits", "served", "rows",
        "best_t_train")


def _rows(result, kind, t_train=None):
  return [r for r in result["rows"] if r["kind"] == kind
          and (t_train is None or r.get("t_train") == t_train)]


def _stats(rows):
  """Paired stats of the ensemble against its best member and against the
  mean of its members, and of the best member against that mean."""
  ensemble = [r["ensemble_val"] for r in rows]
  best = [r["members_val"][r["best"]] for r in rows]
  mean = [float(np.mean(list(r["members_val"].values()))) for r in rows]
  return {"best": tables.paired_stats(ensemble, best),
          "gain": tables.paired_stats(ensemble, mean),
          "lead": tables.paired_stats(best, mean)}


def _picked_wrong(rows):
  """Rows whose best member on the selection split is not the best on the
  reported split."""
  return sum(r["members_val"][r["best"]] < max(r["members_val"].values())
             for r in rows)


def kind_lines(label, rows, overlapping):
  """The target and the mechanism of one kind of ensemble, as bullets."""
  s = _stats(rows)
  verdict = tables.verdict(s["best"], 0.0)
  lines = [f"* *{label}, ensemble vs its best member* (target: mean > 0): "
           f"{tables.paired_text(s['best'])}: **{verdict}**."]
  if overlapping:
    lines.append(
        f"  Each model is a member of {overlapping} of these ensembles, so "
        "the differences are not independent and the t interval is "
        "narrower than independent ensembles would give; the sign count "
        "stands beside it.")
  if s["gain"]["mean"] > s["lead"]["mean"]:
    why = ("averaging gains more than the best member leads, so the "
           "ensemble is ahead on average")
  else:
    why = ("the best member leads the members' mean by more than averaging "
           "gains, so the ensemble is not ahead on average")
  disagreement = 100 * np.mean([r["disagreement"] for r in rows])
  lines.append(
      f"  Ensemble minus best = ensemble minus the members' mean "
      f"({tables.paired_text(s['gain'])}) minus the best member's lead over "
      f"that mean ({tables.paired_text(s['lead'])}): {why}. The members' "
      f"labels differ on {disagreement:.1f}% of the reported pixels (mean "
      "over ensembles); averaging can only change those pixels. The member "
      "best on the selection split is not the best on the reported split "
      f"in {_picked_wrong(rows)} of {len(rows)} ensembles.")
  return lines


def reading(result):
  """The computed conclusions (targets first), one bullet each."""
  pair = " + ".join(str(t) for t in result["pair"])
  best_t = result["best_t_train"]
  lines = kind_lines(f"t_train {pair}", _rows(result, "t_train pair"), 0)
  lines += kind_lines(f"{result['members']} training seeds of t_train "
                      f"{best_t}", _rows(result, "seeds", best_t),
                      result["members"])
  pair_d = np.mean([r["disagreement"] for r in _rows(result, "t_train pair")])
  seed_d = np.mean([r["disagreement"]
                    for r in _rows(result, "seeds", best_t)])
  more, less = (("training seeds", f"t_train {pair}") if seed_d > pair_d
                else (f"t_train {pair}", "training seeds"))
  lines.append(
      f"* Members from {more} disagree on more pixels "
      f"({100 * max(seed_d, pair_d):.1f}% against "
      f"{100 * min(seed_d, pair_d):.1f}% for {less}).")
  return lines


def _table(rows):
  lines = ["| ensemble | members, reported mIoU | best on selection | "
           "ensemble | ensemble - best | ensemble - members' mean | "
           "pixels where members differ |",
           "|---|---|---|---:|---:|---:|---:|"]
  for r in rows:
    members = ", ".join(f"{k}: {100 * v:.1f}"
                        for k, v in r["members_val"].items())
    best = r["members_val"][r["best"]]
    mean = float(np.mean(list(r["members_val"].values())))
    lines.append(
        f"| {r['name']} | {members} | {r['best']} | "
        f"{100 * r['ensemble_val']:.1f} | "
        f"{100 * (r['ensemble_val'] - best):+.1f} | "
        f"{100 * (r['ensemble_val'] - mean):+.1f} | "
        f"{100 * r['disagreement']:.1f}% |")
  return lines


def format_page(result, command):
  select, val = result["splits"]
  pair = " + ".join(str(t) for t in result["pair"])
  best_t = result["best_t_train"]
  lines = [
      "# Ensembles of other members: a t_train pair and training seeds",
      "",
      "Written by `tools/ensemble_study.py` from the models of one "
      "`tools/ablation.py` run; no number on this page is typed by hand. "
      "Members are named seed/t_train. Each predicts at the setting the "
      "ablation serves for it (t_test and refinement chosen on "
      f"`{select}`); an ensemble averages its members' probabilities. Its "
      f"best member is the one with the highest mIoU on `{select}`; every "
      f"mIoU below is on `{val}`.",
      "",
      f"Produced by `{command}`.",
      "",
      f"## Two t_train values of one seed (t_train {pair})",
      "",
      *_table(_rows(result, "t_train pair")),
      "",
      f"## {result['members']} training seeds of one t_train",
      "",
      f"t_train {best_t} has the highest mean `{select}` mIoU of the single "
      "models over seeds; the targets use its ensembles.",
      "",
  ]
  for t in result["t_trains"]:
    lines += [f"### t_train {t}", "", *_table(_rows(result, "seeds", t)), ""]
  lines += ["## Reading", "", *reading(result), "",
            tables.TARGET_RULE, "",
            "Served setting of each member (t_test, refinement): "
            + ", ".join(f"{k}: ({v[0]}, {_refinement(v[1])})"
                        for k, v in result["served"].items()) + ".", ""]
  return "\n".join(lines)


def _refinement(value):
  from dis_tf import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.refinement_name(value)


def write(result, output, command):
  return tables.write_page(result, output, command, format_page)


def load(path):
  return tables.load_page(path, KEYS, "tools/ensemble_study.py")
