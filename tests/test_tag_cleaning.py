"""dis_tf.tag_cleaning: cleaned tags (JSONL) and palette-PNG labelmaps."""

import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dis_tf import errors
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


def _annotated_images(weak_dir):
  from dis_tf.data import web_tags
  with open(os.path.join(weak_dir, web_tags.ANNOTATIONS)) as f:
    return [json.loads(line)["image"] for line in f if line.strip()]


def test_write_weak_folder_gives_each_image_its_tags(tmp_path,
                                                     mini_benchmark):
  from dis_tf.data import web_tags
  source = mini_benchmark["weak_dir"]
  images = _annotated_images(source)
  names = [f"c{i}" for i in range(21)]
  tags = np.zeros((len(images), 21), bool)
  tags[:, 0] = True
  tags[np.arange(len(images)), 1 + np.arange(len(images)) % 20] = True
  # Given in another order than the source's: paired by name, not position.
  order = np.arange(len(images))[::-1]
  out = tag_cleaning.write_weak_folder(
      source, str(tmp_path / "w"), [images[i] for i in order], tags[order],
      names)
  with open(os.path.join(out, web_tags.ANNOTATIONS)) as f:
    written = [json.loads(line) for line in f]
  assert [w["image"] for w in written] == images
  assert [w["tags"] for w in written] == [
      [f"c{1 + i % 20}"] for i in range(len(images))]
  for name in images:  # The images and the truth are copied, not linked.
    path = os.path.join(out, name)
    assert os.path.isfile(path) and not os.path.islink(path)
  assert os.path.isfile(os.path.join(out, web_tags.TRUTH_DIR, "truth.jsonl"))
  with pytest.raises(ValueError, match="has no cleaned tags"):
    tag_cleaning.write_weak_folder(source, str(tmp_path / "w2"), images[1:],
                                   tags[1:], names)
  # Nothing half-written is left, under the name or the temp name.
  assert sorted(os.listdir(tmp_path)) == ["w"]
  # An existing folder is someone's data unless overwrite is asked for.
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "keep.txt").write_text("my data")
  with pytest.raises(errors.UserError, match="already exists"):
    tag_cleaning.write_weak_folder(source, str(tmp_path / "mine"), images,
                                   tags, names)
  assert (tmp_path / "mine" / "keep.txt").read_text() == "my data"
  tag_cleaning.write_weak_folder(source, str(tmp_path / "w"), images,
                                 tags[::-1], names, overwrite=True)
  with open(os.path.join(out, web_tags.ANNOTATIONS)) as f:
    assert [json.loads(line)["tags"] for line in f] == [
        [f"c{1 + i % 20}"] for i in reversed(range(len(images)))]
  with pytest.raises(ValueError, match="no image elsewhere.jpg"):
    tag_cleaning.write_weak_folder(
        source, str(tmp_path / "w3"), images + ["elsewhere.jpg"],
        np.concatenate([tags, tags[:1]]), names)
  with pytest.raises(ValueError, match="would overwrite its source"):
    tag_cleaning.write_weak_folder(source, source + "/", images, tags, names)


def test_write_cleaned_folder_keeps_given_tags_where_none_survive(
    tmp_path, mini_benchmark):
  from dis_tf.classes import VOC_CLASSES
  from dis_tf.data import web_tags
  source = mini_benchmark["weak_dir"]
  images = _annotated_images(source)
  records = [{"file_name": name, "given_tags": [3, 7],
              "cleaned_tags": [] if i % 2 else [7]}
             for i, name in enumerate(images)]
  kept = tag_cleaning.write_cleaned_folder(source, str(tmp_path / "w"),
                                           records, VOC_CLASSES)
  assert kept == len(images) // 2
  with open(os.path.join(tmp_path, "w", web_tags.ANNOTATIONS)) as f:
    written = [json.loads(line)["tags"] for line in f]
  assert written == [[VOC_CLASSES[3], VOC_CLASSES[7]] if i % 2 else
                     [VOC_CLASSES[7]] for i in range(len(images))]
  # The copy is a web_tags folder the reader accepts, with those tags.
  with open(os.path.join(tmp_path, "w", web_tags.ANNOTATIONS)) as f:
    parsed = [web_tags.parse_annotation_line(line, "a", i + 1)
              for i, line in enumerate(f)]
  assert [p[1] for p in parsed] == [[3, 7] if i % 2 else [7]
                                    for i in range(len(images))]
