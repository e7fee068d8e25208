"""dis_tf.evaluation: predictions at several t_test, scores over a split."""

import gc
import weakref

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import evaluation
from dis_tf import image_ops
from dis_tf.modeling.subnets import refine_labelmap


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model()


def _numpy_miou(labels, predictions, num_classes):
  """Independent mIoU: per-class |A and B| / |A or B| over valid pixels."""
  labels = np.concatenate([label.reshape(-1) for label in labels])
  predictions = np.concatenate([p.reshape(-1) for p in predictions])
  valid = labels != 255
  labels, predictions = labels[valid], predictions[valid]
  ious = []
  for c in range(num_classes):
    union = np.sum((labels == c) | (predictions == c))
    if union:
      ious.append(np.sum((labels == c) & (predictions == c)) / union)
  return float(np.mean(ious)), float(np.mean(labels == predictions))


def test_miou_matches_independent_numpy(model, eval_examples):
  examples = eval_examples()
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
    valid = sum(int(np.sum(label != 255)) for label in labels)
    assert row["confusion_matrix"].sum() == valid


def test_one_backbone_call_per_image_for_all_t(model, eval_examples,
                                               backbone_calls):
  examples = eval_examples()
  with backbone_calls(model) as calls:
    evaluation.evaluate_model(model, examples, [0, 2, 5])
  assert len(calls) == len(examples)


def _canvas(model, image):
  """The fitted canvas of a normalised image, by resize + pad by hand."""
  height, width = image.shape[1:3]
  scale = model.eval_crop_size / max(height, width)
  fitted = (round(height * scale), round(width * scale))
  resized = tf.image.resize(image, fitted, method="bilinear")
  canvas = tf.pad(resized, [[0, 0], [0, model.eval_crop_size - fitted[0]],
                            [0, model.eval_crop_size - fitted[1]], [0, 0]])
  return canvas, fitted


def _to_original(model, probs, fitted, size):
  """Canvas feature map -> original size: resize, crop, resize."""
  canvas = tf.image.resize(probs, [model.eval_crop_size] * 2,
                           method="bilinear")
  return tf.image.resize(canvas[:, :fitted[0], :fitted[1]], size,
                         method="bilinear")[0].numpy()


def test_incremental_steps_equal_steps_from_scratch(model, eval_examples):
  image = eval_examples()[1]["image"]
  incremental = evaluation.predict(model, image, [0, 2, 5])
  canvas, fitted = _canvas(model, image)
  for t in (2, 5):
    u1, v1 = model.backbone(canvas, training=False)
    target = image_ops.image_target(canvas, tf.shape(u1)[1:3])
    fresh = model.latent(u1, v1, target, steps=t)
    probs = _to_original(model, fresh["probabilities"], fitted,
                         image.shape[1:3])
    np.testing.assert_allclose(incremental[t]["probabilities"], probs,
                               atol=1e-5)
    np.testing.assert_allclose(incremental[t]["tag_probabilities"],
                               fresh["tag_probabilities"][0], atol=1e-5)


@pytest.mark.parametrize("refinement", [None, 0.0, 2.0])
def test_t0_equals_plain_forward_argmax(model, eval_examples, refinement):
  for example in eval_examples():
    image = example["image"]
    canvas, fitted = _canvas(model, image)
    out = model({"image": canvas})
    if refinement is None:  # The default: the network's own prediction.
      final = tf.nn.softmax(out["labelmap_logits"])
    else:
      final = refine_labelmap(out["labelmap_logits"], out["tag_logits"],
                              refinement)
    expected = np.argmax(_to_original(model, final, fitted,
                                      image.shape[1:3]), -1)
    probs = evaluation.predict(model, image, [0], refinements=[refinement])[
        0]["probabilities"]
    assert probs.shape == tuple(image.shape[1:3]) + (21,)
    np.testing.assert_array_equal(np.argmax(probs, -1), expected)


def test_the_default_final_prediction_is_unrefined(model, eval_examples):
  assert model.tag_refinement is None
  image = eval_examples()[0]["image"]
  out = evaluation.predict(model, image, [2], refinements=[None, 0.0])[2]
  np.testing.assert_array_equal(out["probabilities"],
                                out["by_refinement"][None])
  assert not np.allclose(out["by_refinement"][None],
                         out["by_refinement"][0.0])


def test_refinements_are_scored_side_by_side(model, eval_examples):
  examples = eval_examples()
  grid = evaluation.evaluate_model(model, examples, [0, 3],
                                   refinements=[None, 0.0], per_image=True)
  assert [(s["refinement"], s["t_test"]) for s in grid["settings"]] == [
      ("off", 0), ("off", 3), ("paper", 0), ("paper", 3)]
  paper = evaluation.evaluate_model(model, examples, [0, 3],
                                    refinements=[0.0])
  for one, both in zip(paper["settings"], grid["settings"][2:]):
    np.testing.assert_array_equal(one["confusion_matrix"],
                                  both["confusion_matrix"])
  for setting in grid["settings"]:
    np.testing.assert_array_equal(setting["image_matrices"].sum(0),
                                  setting["confusion_matrix"])


def test_compiled_and_eager_agree(model, eval_examples):
  example = eval_examples()[:1]
  a = evaluation.evaluate_model(model, example, [0, 4])
  b = evaluation.evaluate_model(model, example, [0, 4], compiled=False)
  for ra, rb in zip(a["settings"], b["settings"]):
    np.testing.assert_array_equal(ra["confusion_matrix"],
                                  rb["confusion_matrix"])


@pytest.mark.parametrize("flip,scales", [(True, (1.0,)),
                                         (False, (0.5, 1.0)),
                                         (True, (0.75, 1.25))])
def test_flip_and_scales_give_valid_probabilities(model, eval_examples,
                                                  backbone_calls, flip,
                                                  scales):
  image = eval_examples()[1]["image"]
  with backbone_calls(model) as calls:
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


def test_flip_average_is_mean_of_plain_and_flipped_back(model, eval_examples):
  image = eval_examples()[2]["image"]
  plain = evaluation.predict_probabilities(model, image, [2])[2]
  mirrored = evaluation.predict_probabilities(
      model, tf.reverse(image, axis=[2]), [2])[2]
  both = evaluation.predict_probabilities(model, image, [2], flip=True)[2]
  np.testing.assert_allclose(both, (plain + mirrored[:, ::-1]) / 2,
                             atol=1e-5)


def test_tag_scores_use_threshold(model, eval_examples):
  examples = eval_examples()
  results = evaluation.evaluate_model(model, examples, [0],
                                      tag_threshold=0.0)
  tags = results["settings"][0]["tags"]
  # Threshold 0: every tag predicted, so recall is 1.
  assert tags["recall"] == pytest.approx(1.0)
  assert 0 < tags["precision"] <= 1 and 0 <= tags["map"] <= 1


def test_compiled_latent_cache_does_not_keep_models_alive(tiny_model):
  temporary = tiny_model(width=8)
  evaluation.predict(temporary, np.zeros((1, 32, 32, 3), np.float32), [1])
  ref = weakref.ref(temporary)
  del temporary
  gc.collect()
  assert ref() is None


def test_eval_summaries_replace_the_previous_evaluation(tmp_path,
                                                        tensorboard_events):
  assert evaluation.summary_dir("/m", "val[100:]") == "/m/logs/eval/val_100__"
  assert evaluation.summary_dir("/m", "val", flip=True, scales=(0.75, 1.0)) \
      == "/m/logs/eval/val_flip_ms0.75_1"

  def results(miou):
    return {"settings": [
        {"t_test": t, "mean_iou": miou + t, "pixel_accuracy": 0.5}
        for t in (0, 10, 30)]}

  log_dir = str(tmp_path / "logs" / "eval" / "val")
  evaluation.write_summaries(results(0.1), log_dir)
  evaluation.write_summaries(results(0.2), log_dir)
  events = tensorboard_events(log_dir)
  assert [e["step"] for e in events["eval/miou"]] == [0, 10, 30]
  np.testing.assert_allclose([float(e["value"]) for e in events["eval/miou"]],
                             [0.2, 10.2, 30.2], rtol=1e-6)
  assert len(events["eval/pixel_accuracy"]) == 3


def test_the_latent_loop_is_traced_once_per_model_and_mode(tiny_model,
                                                           eval_examples):
  # Images of three sizes, three t_tests (a first call and continuations),
  # two evaluations: one trace in test mode, one more with tags.
  model = tiny_model(seed=3)
  examples = eval_examples()
  evaluation.evaluate_model(model, examples, [0, 2, 5])
  evaluation.evaluate_model(model, examples[:1], [0, 3],
                            refinements=[None, 0.0])
  compiled = evaluation._latent_fn(model).compiled
  assert compiled.experimental_get_tracing_count() == 1
  evaluation.predict(model, examples[0]["image"], [0, 2],
                     tags=examples[0]["tags"])
  evaluation.predict(model, examples[1]["image"], [0, 2],
                     tags=examples[1]["tags"])
  assert compiled.experimental_get_tracing_count() == 2


def test_a_batch_predicts_what_each_image_predicts_alone(model,
                                                         eval_examples):
  """predict_batch stacks canvases of images of different sizes; every
  latent step is per example, so each result is the image's own."""
  examples = eval_examples()
  images = [ex["image"] for ex in examples]
  kwargs = dict(flip=True, scales=(1.0, 0.75), with_reconstruction=True,
                refinements=[None, 0.0])
  batched = evaluation.predict_batch(model, images, [0, 2, 5], **kwargs)
  assert len(batched) == len(images)
  for image, together in zip(images, batched):
    alone = evaluation.predict(model, image, [0, 2, 5], **kwargs)
    for t in (0, 2, 5):
      assert together[t]["probabilities"].shape == (*image.shape[1:3], 21)
      for refinement in (None, 0.0):
        np.testing.assert_allclose(together[t]["by_refinement"][refinement],
                                   alone[t]["by_refinement"][refinement],
                                   atol=1e-5)
      for key in ("tag_probabilities", "reconstruction", "image_target"):
        np.testing.assert_allclose(together[t][key], alone[t][key],
                                   atol=1e-5)
      assert together[t]["objective"] == pytest.approx(alone[t]["objective"],
                                                       rel=1e-4, abs=1e-4)


def test_a_batch_in_training_mode_uses_each_image_s_own_tags(model,
                                                             eval_examples):
  examples = eval_examples()
  images = [ex["image"] for ex in examples]
  tags = [ex["tags"] for ex in examples]
  batched = evaluation.predict_batch(model, images, [0, 3], tags=tags)
  for image, image_tags, together in zip(images, tags, batched):
    alone = evaluation.predict(model, image, [0, 3], tags=image_tags)
    for t in (0, 3):
      np.testing.assert_allclose(together[t]["probabilities"],
                                 alone[t]["probabilities"], atol=1e-5)
  with pytest.raises(ValueError, match="2 tags for 3 images"):
    evaluation.predict_batch(model, images, [0], tags=tags[:2])


def test_batched_evaluation_scores_as_batch_1(model, eval_examples,
                                              backbone_calls):
  # 5 images in batches of 2: the last batch is short.
  examples = eval_examples(sizes=((64, 64), (56, 72), (64, 48), (40, 64),
                                  (72, 56)), seed=3)
  one = evaluation.evaluate_model(model, examples, [0, 3], per_image=True,
                                  refinements=[None, 2.0])
  with backbone_calls(model) as calls:
    two = evaluation.evaluate_model(model, examples, [0, 3], per_image=True,
                                    refinements=[None, 2.0], batch_size=2)
  assert len(calls) == 3
  assert two["num_images"] == one["num_images"] == 5
  for a, b in zip(one["settings"], two["settings"]):
    assert (a["t_test"], a["refinement"]) == (b["t_test"], b["refinement"])
    np.testing.assert_array_equal(a["confusion_matrix"], b["confusion_matrix"])
    np.testing.assert_array_equal(a["image_matrices"], b["image_matrices"])
    assert a["objective"] == pytest.approx(b["objective"], rel=1e-4)
    assert a["tags"] == pytest.approx(b["tags"])
  limited = evaluation.evaluate_model(model, examples, [0], limit=3,
                                      batch_size=2)
  assert limited["num_images"] == 3


def test_eval_batch_size_below_1_is_an_error_naming_the_field(model,
                                                              eval_examples):
  with pytest.raises(ValueError, match=r"data\.eval_batch_size"):
    evaluation.evaluate_model(model, eval_examples(), [0], batch_size=0)
