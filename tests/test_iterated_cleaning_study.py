"""dis_tf.research.iterated_cleaning_study: the area rule and its fallback,
the weak-folder copy with new tags, one seed end to end on a tiny run, and a
page whose conclusions follow the numbers."""

import json
import os

import numpy as np
import pytest

from dis_tf import model_dir as model_dir_lib
from dis_tf.data import web_tags
from dis_tf.research import iterated_cleaning_study as ic


def test_clean_by_area_keeps_the_drawn_given_tags_and_falls_back():
  given = np.array([[1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 0, 0]], bool)
  areas = np.array([[0.5, 0.3, 0.0, 0.2],   # class 2 given, not drawn
                    [0.9, 0.0, 0.05, 0.05],  # both drawn; 3 only at 0.05
                    [1.0, 0.0, 0.0, 0.0]])   # nothing given is drawn
  cleaned, kept = ic.clean_by_area(given, areas)
  # NumPy reference: given AND drawn, background copied, an empty image
  # keeps its given tags.
  expected = given & (areas > 0)
  expected[:, 0] = given[:, 0]
  expected[2] = given[2]
  np.testing.assert_array_equal(cleaned, expected)
  np.testing.assert_array_equal(kept, [False, False, True])
  cleaned, kept = ic.clean_by_area(given, areas, min_area=0.05)
  np.testing.assert_array_equal(cleaned[1], [1, 0, 1, 1])  # fell back
  np.testing.assert_array_equal(kept, [False, True, True])


def test_run_seed_end_to_end_and_resume(tmp_path, mini_run, mini_benchmark):
  model_dir = str(tmp_path / "run")
  _, model = mini_run(model_dir)
  model_dir_lib.save_model(model, model_dir)
  workdir = str(tmp_path / "work")
  result = ic.run_seed(model_dir, workdir, pseudo_images=3)
  assert result["pool"] == mini_benchmark["num_weak"]
  assert set(result["miou"]) == {"run", "given", "cleaned"}
  for scores in result["miou"].values():
    assert set(scores) == {"0", "10"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
  assert set(result["f1"]) == {"given", "round1", "round2"}
  assert result["pseudo_images"] == 3
  # The cleaned arm's tags are a subset of the given arm's, image by image.
  def tags_of(arm):
    with open(os.path.join(workdir, arm, "web_tags",
                           web_tags.ANNOTATIONS)) as f:
      return [set(json.loads(line)["tags"]) for line in f]
  given, cleaned = tags_of("given"), tags_of("cleaned")
  assert len(given) == len(cleaned) == result["pool"]
  assert all(c <= g and c for g, c in zip(given, cleaned))
  for arm in ic.ARMS:
    assert os.path.exists(os.path.join(workdir, arm, "run", "model.keras"))
  # A finished seed is read back, not retrained.
  os.remove(os.path.join(workdir, "given", "run", "model.keras"))
  assert ic.run_seed(model_dir, workdir, pseudo_images=3) == result


def _result(gains, pseudo, again):
  runs = []
  for g, p, a in zip(gains, pseudo, again):
    runs.append({
        "pool": 100, "kept_given": 3, "min_area": 0.0, "t_train": 10,
        "split": "val[100:]", "pseudo_images": 50,
        "miou": {"run": {"0": 0.5, "10": 0.5},
                 "given": {"0": 0.5, "10": 0.5},
                 "cleaned": {"0": 0.5 + g, "10": 0.5 + g}},
        "f1": {"given": 0.7, "round1": 0.8, "round2": 0.8 + a},
        "pseudo_miou": {"given": 0.4, "cleaned": 0.4 + p}})
  return {"seeds": list(range(len(runs))), "runs": runs}


UP, DOWN, MIXED = (0.03, 0.02, 0.04), (-0.03, -0.02, -0.04), (0.02, -0.03,
                                                              0.01)


@pytest.mark.parametrize("gains, verdict, words", [
    (UP, "met", "the model trained on them is better, +3.0"),
    (DOWN, "missed", "the model trained on them is worse, -3.0"),
    (MIXED, "not resolved", "is not resolved from the one trained"),
])
def test_the_retraining_verdict_follows_the_numbers(gains, verdict, words):
  page = ic.format_page(_result(gains, UP, MIXED), "cmd")
  assert f"beats the given tags (t=0, threshold 0): **{verdict}**" in page
  assert words in page


@pytest.mark.parametrize("pseudo, words", [
    (UP, "give stage 2 better pseudo labels"),
    (DOWN, "give stage 2 worse pseudo labels"),
    (MIXED, "do not resolvably change the pseudo labels"),
])
def test_the_pseudo_label_clause_follows_the_numbers(pseudo, words):
  assert words in ic.format_page(_result(MIXED, pseudo, MIXED), "cmd")


@pytest.mark.parametrize("again, verdict, words", [
    (UP, "met", "raises the tag F1 by +3.0"),
    (DOWN, "missed", "lowers the tag F1 (-3.0"),
    (MIXED, "not resolved", "does not resolvably change the tag F1"),
])
def test_the_round_two_verdict_follows_the_numbers(again, verdict, words):
  page = ic.format_page(_result(MIXED, MIXED, again), "cmd")
  assert f"beats round 1 (F1, threshold 0): **{verdict}**" in page
  assert words in page


def test_the_table_and_the_copy_check_come_from_the_numbers():
  result = _result(UP, UP, UP)
  result["runs"][1]["miou"]["given"]["0"] = 0.52
  page = ic.format_page(result, "cmd")
  assert "| 0 | 3 of 100 | 70.0 | 80.0 | 83.0 | 40.0 | 43.0 | 50.0 | " \
         "50.0 | 53.0 | 50.0 | 53.0 |" in page
  assert ("the `given` arm minus the run itself at t=0: +0.7 (sd 1.2"
          in page)


def test_write_and_load_round_trip(tmp_path):
  result = _result(UP, DOWN, MIXED)
  page = ic.write(result, str(tmp_path / "I.md"), "cmd")
  loaded, command = ic.load(str(tmp_path / "I.json"))
  assert command == "cmd" and ic.format_page(loaded, command) == page


def test_pseudo_label_miou_against_a_numpy_reference(tiny_run,
                                                     mini_benchmark,
                                                     tmp_path):
  from dis_tf import evaluation
  from dis_tf.data import pipeline
  config, model = tiny_run(str(tmp_path / "run"), width=8, t_train=2)
  config.data.voc_dir = mini_benchmark["voc_dir"]
  config.data.weak_dir = mini_benchmark["weak_dir"]
  config.data.data_dir = mini_benchmark["data_dir"]
  examples = list(pipeline.weak_eval_dataset(config).take(3))
  names = [evaluation.example_file_name(e, i) for i, e in enumerate(examples)]
  tags = np.zeros((3, config.model.num_classes), bool)
  tags[:, 0] = True
  tags[:, 5] = True
  value = ic.pseudo_label_miou(model, config, names, tags, 3, batch_size=2)
  # Reference: one image at a time, the confusion matrix by hand.
  truth = web_tags.load_weak_truth(config.data.weak_dir)
  c = config.model.num_classes
  confusion = np.zeros((c, c), np.int64)
  for example, name, row in zip(examples, names, tags):
    out = evaluation.predict(model, example["image"], [2],
                             tags=row[None].astype(np.float32))
    labels = np.argmax(out[2]["probabilities"], -1)
    mask = truth[os.path.normpath(name)]["mask"]
    valid = mask != 255
    np.add.at(confusion, (mask[valid], labels[valid]), 1)
  union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
  with np.errstate(invalid="ignore", divide="ignore"):
    expected = np.nanmean(np.diag(confusion) / np.where(union, union, np.nan))
  assert value == pytest.approx(expected, abs=1e-6)
  # The tags are paired with the images by name: a shifted list is refused.
  with pytest.raises(ValueError, match="is not the 0th of the tag pass"):
    ic.pseudo_label_miou(model, config, names[1:] + names[:1], tags, 3, 2)
