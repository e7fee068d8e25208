"""dis_tf.tag_cleaning: cleaned tags (JSONL) and palette-PNG labelmaps."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dis_tf import evaluation
from dis_tf import tag_cleaning


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model()


def test_clean_tags_writes_palette_pngs_and_jsonl(model, eval_examples,
                                                  tmp_path):
  examples = eval_examples()
  for ex, name in zip(examples, ["images/a.jpg", "images/sub/b.png",
                                 "../escape.jpg"]):
    ex["file_name"] = tf.constant([name])
    del ex["mask"]
  truth = {
      "images/a.jpg": {"tags": [1], "mask": np.zeros((64, 64), np.uint8)},
      "images/sub/b.png": {"tags": [1, 2], "mask": None},
  }
  report = tag_cleaning.clean_tags(model, examples, str(tmp_path), t_train=3,
                                 truth=truth)
  assert report["num_images"] == 3 and report["num_matched"] == 2
  assert set(report["before"]) == {"precision", "recall", "f1"}
  assert "labelmap" in report
  lines = [json.loads(line) for line in open(report["jsonl"])]
  assert [line["file_name"] for line in lines] == ["images/a.jpg",
                                             "images/sub/b.png",
                                             "../escape.jpg"]
  for line, ex in zip(lines, examples):
    assert len(line["tag_probabilities"]) == 21
    assert line["given_tags"] == [int(i) for i in
                                  np.flatnonzero(ex["tags"][0])[1:]]
    path = os.path.join(str(tmp_path), line["labelmap"])
    # Kept inside the output folder whatever the file name.
    assert os.path.realpath(path).startswith(os.path.realpath(tmp_path))
    png = Image.open(path)
    assert png.mode == "P"
    ids = np.array(png)
    assert ids.shape == tuple(ex["image"].shape[1:3])
    # Pixel values are the class ids the model predicts.
    out = evaluation.predict(model, ex["image"], [3], tags=ex["tags"])[3]
    np.testing.assert_array_equal(ids, np.argmax(out["probabilities"], -1))
    cleaned = [i for i in range(1, 21)
               if out["tag_probabilities"][i] > 0.5]
    assert line["cleaned_tags"] == cleaned
  text = tag_cleaning.format_cleaning_report(report)
  assert "given (noisy)" in text and "cleaned (t_train=3)" in text




@pytest.mark.parametrize("min_area", [0.0, 0.05])
def test_the_labelmap_rule_keeps_the_given_tags_the_plain_labelmap_draws(
    model, eval_examples, tmp_path, min_area):
  examples = eval_examples()
  for ex in examples:
    # Every class given: the rule must remove those the labelmap lacks.
    ex["tags"] = tf.ones_like(ex["tags"])
  report = tag_cleaning.clean_tags(model, examples, str(tmp_path), t_train=2,
                                   rule="labelmap", min_area=min_area)
  assert report["rule"] == "labelmap" and report["min_area"] == min_area
  lines = [json.loads(line) for line in open(report["jsonl"])]
  for line, ex in zip(lines, examples):
    plain = evaluation.predict(model, ex["image"], [0],
                               refinements=[None])[0]["probabilities"]
    labelmap = np.argmax(plain, -1)
    expected = [c for c in range(1, 21) if np.mean(labelmap == c) > min_area]
    assert line["cleaned_tags"] == expected
  if min_area == 0.0:  # The random model draws some object classes.
    assert any(line["cleaned_tags"] for line in lines)
  # A given tag the labelmap draws is kept only if it was given.
  examples[0]["tags"] = tf.one_hot([[0]], 21)
  report = tag_cleaning.clean_tags(model, examples[:1], str(tmp_path / "one"),
                                   t_train=2, rule="labelmap")
  assert json.loads(open(report["jsonl"]).readline())["cleaned_tags"] == []
  # The report's table names the rule, not the steps it does not use.
  report["before"] = report["after"] = {"precision": 1, "recall": 1, "f1": 1}
  text = tag_cleaning.format_cleaning_report(report)
  assert "cleaned (labelmap rule, area > 0)" in text and "t_train" not in text


@pytest.mark.parametrize("kwargs, message", [
    ({"rule": "area"}, "rule='area'"),
    ({"rule": "labelmap", "min_area": 1.0}, "min_area=1.0"),
])
def test_a_bad_cleaning_rule_is_an_error(model, eval_examples, tmp_path,
                                         kwargs, message):
  with pytest.raises(ValueError, match=message):
    tag_cleaning.clean_tags(model, eval_examples(), str(tmp_path), 2,
                            **kwargs)
