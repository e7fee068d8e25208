"""dis_tf.evaluation and dis_tf.visualization: tiny model, hand-made dicts."""

import csv
import io
import json
import os
from unittest import mock

import keras
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dis_tf import classes
from dis_tf import config as config_lib
from dis_tf import evaluation
from dis_tf import image_ops
from dis_tf import visualization
from dis_tf.modeling.dis_model import build_dis_model
from dis_tf.modeling.subnets import refine_labelmap

SIZES = [(64, 64), (56, 72), (64, 48)]


@pytest.fixture(scope="module")
def model():
  keras.utils.set_random_seed(0)
  config = config_lib.synthetic()
  config.model.tiny_width = 16
  return build_dis_model(config)


def _examples(sizes=SIZES, seed=0):
  """Batch-1 dicts as the eval pipeline emits them (images of varied size)."""
  rng = np.random.RandomState(seed)
  examples = []
  for i, (h, w) in enumerate(sizes):
    mask = rng.randint(0, 4, size=(1, h, w)).astype(np.int32)
    mask[:, :3] = 255  # An ignore band, as in VOC.
    tags = np.zeros((1, 21), np.float32)
    tags[0, 0] = 1.0
    tags[0, np.unique(mask[mask != 255])] = 1.0
    examples.append({
        "image": tf.constant(rng.randn(1, h, w, 3).astype(np.float32)),
        "mask": tf.constant(mask),
        "tags": tf.constant(tags),
        "file_name": tf.constant([f"img_{i}.jpg"]),
    })
  return examples


def _numpy_miou(labels, predictions, num_classes):
  """Independent mIoU: per-class |A and B| / |A or B| over valid pixels."""
  labels = np.concatenate([l.reshape(-1) for l in labels])
  predictions = np.concatenate([p.reshape(-1) for p in predictions])
  valid = labels != 255
  labels, predictions = labels[valid], predictions[valid]
  ious = []
  for c in range(num_classes):
    union = np.sum((labels == c) | (predictions == c))
    if union:
      ious.append(np.sum((labels == c) & (predictions == c)) / union)
  return float(np.mean(ious)), float(np.mean(labels == predictions))


def test_parse_flags_lists():
  assert evaluation.parse_t_tests("30,0,10,10") == [0, 10, 30]
  assert evaluation.parse_t_tests(["0", "5"]) == [0, 5]
  with pytest.raises(ValueError, match="--t_test.*'x'"):
    evaluation.parse_t_tests("0,x")
  with pytest.raises(ValueError, match="--t_test.*negative"):
    evaluation.parse_t_tests("-1")
  assert evaluation.parse_scales(["0.75", "1", "1.25"]) == (0.75, 1.0, 1.25)
  with pytest.raises(ValueError, match="--scales"):
    evaluation.parse_scales("0")


def test_miou_matches_independent_numpy(model):
  examples = _examples()
  t_tests = [0, 3]
  results = evaluation.evaluate_model(model, examples, t_tests)
  assert results["num_images"] == len(examples)
  for row, t in zip(results["settings"], t_tests):
    predictions = [
        np.argmax(evaluation.predict_probabilities(model, ex["image"], [t])[t],
                  axis=-1) for ex in examples]
    labels = [ex["mask"].numpy()[0] for ex in examples]
    miou, accuracy = _numpy_miou(labels, predictions, 21)
    assert row["t_test"] == t
    assert row["mean_iou"] == pytest.approx(miou, abs=1e-9)
    assert row["pixel_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    # Every valid pixel counted once, ignored pixels never.
    valid = sum(int(np.sum(l != 255)) for l in labels)
    assert row["confusion_matrix"].sum() == valid


def test_one_backbone_call_per_image_for_all_t(model):
  examples = _examples()
  calls = []
  original = model.backbone.call

  def counting_call(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  with mock.patch.object(model.backbone, "call", counting_call):
    evaluation.evaluate_model(model, examples, [0, 2, 5])
  assert len(calls) == len(examples)


def test_incremental_steps_equal_steps_from_scratch(model):
  image = _examples()[0]["image"]
  incremental = evaluation.predict(model, image, [0, 2, 5])
  for t in (2, 5):
    u1, v1 = model.backbone(image, training=False)
    target = image_ops.image_target(image, tf.shape(u1)[1:3])
    fresh = model.latent(u1, v1, target, steps=t)
    probs = tf.image.resize(fresh["probabilities"], image.shape[1:3],
                            method="bilinear")[0].numpy()
    np.testing.assert_allclose(incremental[t]["probabilities"], probs,
                               atol=1e-5)
    np.testing.assert_allclose(incremental[t]["tag_probabilities"],
                               fresh["tag_probabilities"][0], atol=1e-5)


def test_t0_equals_plain_forward_argmax(model):
  for example in _examples():
    image = example["image"]
    out = model({"image": image})
    refined = refine_labelmap(out["labelmap_logits"], out["tag_logits"])
    expected = np.argmax(tf.image.resize(refined, image.shape[1:3],
                                         method="bilinear")[0], -1)
    probs = evaluation.predict_probabilities(model, image, [0])[0]
    assert probs.shape == tuple(image.shape[1:3]) + (21,)
    np.testing.assert_array_equal(np.argmax(probs, -1), expected)


def test_compiled_and_eager_agree(model):
  example = _examples()[:1]
  a = evaluation.evaluate_model(model, example, [0, 4])
  b = evaluation.evaluate_model(model, example, [0, 4], compiled=False)
  for ra, rb in zip(a["settings"], b["settings"]):
    np.testing.assert_array_equal(ra["confusion_matrix"],
                                  rb["confusion_matrix"])


@pytest.mark.parametrize("flip,scales", [(True, (1.0,)),
                                         (False, (0.5, 1.0)),
                                         (True, (0.75, 1.25))])
def test_flip_and_scales_give_valid_probabilities(model, flip, scales):
  image = _examples()[1]["image"]
  calls = []
  original = model.backbone.call

  def counting_call(*args, **kwargs):
    calls.append(1)
    return original(*args, **kwargs)

  with mock.patch.object(model.backbone, "call", counting_call):
    out = evaluation.predict(model, image, [0, 3], flip=flip, scales=scales)
  assert len(calls) == len(scales) * (2 if flip else 1)
  for t in (0, 3):
    probs = out[t]["probabilities"]
    assert probs.shape == (56, 72, 21)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    tag_probs = out[t]["tag_probabilities"]
    assert tag_probs[0] == pytest.approx(1.0)
    assert np.all((tag_probs >= 0) & (tag_probs <= 1))


def test_flip_average_is_mean_of_plain_and_flipped_back(model):
  image = _examples()[2]["image"]
  plain = evaluation.predict_probabilities(model, image, [2])[2]
  mirrored = evaluation.predict_probabilities(
      model, tf.reverse(image, axis=[2]), [2])[2]
  both = evaluation.predict_probabilities(model, image, [2], flip=True)[2]
  np.testing.assert_allclose(both, (plain + mirrored[:, ::-1]) / 2,
                             atol=1e-5)


def test_tag_scores_use_threshold(model):
  examples = _examples()
  results = evaluation.evaluate_model(model, examples, [0],
                                      tag_threshold=0.0)
  tags = results["settings"][0]["tags"]
  # Threshold 0: every tag predicted, so recall is 1.
  assert tags["recall"] == pytest.approx(1.0)
  assert 0 < tags["precision"] <= 1 and 0 <= tags["map"] <= 1


def test_table3_layout_and_reports(model, tmp_path):
  results = evaluation.evaluate_model(model, _examples(), [0, 2, 5],
                                      flip=True)
  markdown, csv_text = evaluation.format_table3(results, classes.VOC_CLASSES)
  lines = markdown.strip().splitlines()
  assert len(lines) == 2 + 3  # Header, rule, one row per setting.
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert header[0] == "setting" and header[-1] == "mIoU"
  assert header[1:3] == ["bg", "areo"] and len(header) == 1 + 21 + 1
  assert "t_ts=5 +flip" in lines[-1]
  rows = list(csv.reader(io.StringIO(csv_text)))
  assert len(rows) == 4 and rows[0][-1] == "mIoU"
  for row, setting in zip(rows[1:], results["settings"]):
    assert float(row[-1]) == pytest.approx(100 * setting["mean_iou"], abs=0.06)
    assert len(row) == 23
  md_no_bg, _ = evaluation.format_table3(results, classes.VOC_CLASSES,
                                         include_background=False)
  assert "| bg |" not in md_no_bg.splitlines()[0]
  # Several results (e.g. an ablation) stack into one table.
  stacked, _ = evaluation.format_table3([results, results])
  assert len(stacked.strip().splitlines()) == 2 + 6

  paths = evaluation.write_reports(results, str(tmp_path), extra={"x": 1})
  data = json.load(open(paths["json"]))
  assert data["x"] == 1 and len(data["settings"]) == 3
  assert np.array(data["settings"][0]["confusion_matrix"]).shape == (21, 21)
  assert open(paths["table3_md"]).read() == markdown


def test_clean_tags_writes_palette_pngs_and_jsonl(model, tmp_path):
  examples = _examples()
  for ex, name in zip(examples, ["images/a.jpg", "images/sub/b.png",
                                 "../escape.jpg"]):
    ex["file_name"] = tf.constant([name])
    del ex["mask"]
  truth = {
      "images/a.jpg": {"tags": [1], "mask": np.zeros((64, 64), np.uint8)},
      "images/sub/b.png": {"tags": [1, 2], "mask": None},
  }
  report = evaluation.clean_tags(model, examples, str(tmp_path), t_train=3,
                                 truth=truth)
  assert report["num_images"] == 3 and report["num_matched"] == 2
  assert set(report["before"]) == {"precision", "recall", "f1"}
  assert "labelmap" in report
  lines = [json.loads(l) for l in open(report["jsonl"])]
  assert [l["file_name"] for l in lines] == ["images/a.jpg",
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
  text = evaluation.format_cleaning_report(report)
  assert "given (noisy)" in text and "cleaned (t_train=3)" in text


def test_visualization_writes_png(model, tmp_path):
  examples = _examples()[:2]
  row = visualization.figure_row(model, examples[0], [2, 4])
  assert list(row["labelmaps"]) == [0, 2, 4]
  assert row["image"].dtype == np.uint8 and row["image"].shape == (64, 64, 3)
  assert row["reconstruction"].shape == row["image_target"].shape == (8, 8, 3)
  path = visualization.visualize(model, examples, [2], str(tmp_path / "f.png"),
                                 title="t")
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 300
  with pytest.raises(ValueError, match="No rows"):
    visualization.save_figure_grid([], str(tmp_path / "g.png"))


def test_compiled_latent_cache_does_not_keep_models_alive():
  import gc  # pylint: disable=g-import-not-at-top
  import weakref  # pylint: disable=g-import-not-at-top
  config = config_lib.synthetic()
  config.model.tiny_width = 8
  temporary = build_dis_model(config)
  evaluation.predict(temporary, np.zeros((1, 32, 32, 3), np.float32), [1])
  ref = weakref.ref(temporary)
  del temporary
  gc.collect()
  assert ref() is None
