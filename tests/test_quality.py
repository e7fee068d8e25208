"""dis_tf.quality: the parts against a NumPy reference, the fit, and the
served score through the exported SavedModel, the segmenter and
predictions.jsonl against the in-process value."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import errors
from dis_tf import image_ops
from dis_tf import quality
from dis_tf import segmenter as segmenter_lib
from dis_tf.serving import export_lib


def test_auroc_equals_the_pair_count():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, 40).astype(float)   # Many ties.
  positives = rng.random(40) < 0.4
  pairs = [(1.0 if a > b else 0.5 if a == b else 0.0)
           for a in scores[positives] for b in scores[~positives]]
  assert quality.auroc(scores, positives) == pytest.approx(np.mean(pairs))
  assert quality.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
  assert quality.auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
  assert np.isnan(quality.auroc([1, 2], [1, 1]))


def test_fit_logistic_is_the_penalised_optimum():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 2))
  y = (rng.random(300) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1] + 0.5))))
  w = quality.fit_logistic(x, y, l2=1e-2)
  # The gradient of the penalised log-loss is zero at the optimum.
  xb = np.c_[x, np.ones(300)]
  p = 1 / (1 + np.exp(-xb @ w))
  gradient = xb.T @ (p - y) + 1e-2 * np.r_[w[:2], 0.0]
  np.testing.assert_allclose(gradient, 0.0, atol=1e-6)
  assert w[0] > 1.0 and w[1] < -0.4   # The generating signs, recovered.


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _reference_parts(probs, tags, recon, target, fitted, canvas):
  """The parts of one canvas in NumPy (module docstring of dis_tf.quality)."""
  h, w, c = probs.shape
  rows = -(-fitted[0] * h // canvas)
  cols = -(-fitted[1] * w // canvas)
  p = probs[:rows, :cols].reshape(-1, c)
  error = ((recon - target) ** 2).mean(-1)[:rows, :cols].mean()
  entropy = (-(p * np.log(np.maximum(p, 1e-12))).sum(-1)).mean()
  labels = p.argmax(-1)
  shares = np.bincount(labels, minlength=c) / len(labels)
  present = (shares[1:] >= quality.PRESENT_FRACTION).astype(float)
  agreement = 1 - np.abs(present - tags[1:]).mean()
  return [error, entropy, p.max(-1).mean(), agreement]


def test_image_parts_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  b, h, c, canvas = 3, 4, 5, 32
  probs = _softmax(3 * rng.normal(size=(b, h, h, c))).astype(np.float32)
  tags = rng.random((b, c)).astype(np.float32)
  tags[:, 0] = 1.0
  recon = rng.normal(size=(b, h, h, 3)).astype(np.float32)
  target = rng.normal(size=(b, h, h, 3)).astype(np.float32)
  # Whole canvas, a wide image (2 of 4 cell rows) and a tall one.
  fitted = np.array([[32, 32], [13, 32], [32, 7]], np.int32)
  parts = quality.image_parts(probs, tags, recon, target, fitted,
                              canvas).numpy()
  reference = [_reference_parts(probs[i], tags[i], recon[i], target[i],
                                fitted[i], canvas) for i in range(b)]
  np.testing.assert_allclose(parts, reference, rtol=1e-5, atol=1e-6)
  # The padding is not scored: a padded image differs from its whole canvas.
  assert not np.allclose(parts[1], _reference_parts(
      probs[1], tags[1], recon[1], target[1], (32, 32), canvas))


def _fit():
  return quality.QualityFit(weights=[-1.0, 0.5, 2.0, 0.3], bias=0.2,
                            mean=[1.0, 0.5, 0.7, 0.9],
                            scale=[0.5, 0.2, 0.1, 0.05], t_test=0,
                            split="val[:2]", num_images=2, median_iou=0.4,
                            auroc=0.9)


def test_score_from_parts_is_the_logistic_or_the_fallback():
  parts = np.array([[1.2, 0.4, 0.8, 0.95], [0.3, 0.9, 0.5, 0.7]], np.float32)
  fit = _fit()
  z = ((parts - fit.mean) / fit.scale) @ fit.weights + fit.bias
  np.testing.assert_allclose(quality.score_from_parts(parts, fit).numpy(),
                             1 / (1 + np.exp(-z)), rtol=1e-5)
  np.testing.assert_allclose(quality.score_from_parts(parts, None).numpy(),
                             parts[:, quality.PARTS.index("max_probability")])
  assert "not fitted" in quality.describe(None)
  assert "val[:2]" in quality.describe(fit)


def test_fit_parts_learns_the_signal_and_refuses_a_degenerate_split():
  rng = np.random.default_rng(2)
  parts = rng.normal(size=(200, 4))
  # The IoU rises with max_probability and falls with the reconstruction.
  ious = 0.5 + 0.1 * parts[:, 2] - 0.05 * parts[:, 0] + 0.02 * rng.normal(
      size=200)
  fit = quality.fit_parts(parts, ious, t_test=10, split="val[:100]")
  assert fit.weights[2] > 1.0 and fit.weights[0] < -0.3
  assert fit.auroc > 0.9 and fit.median_iou == pytest.approx(
      np.median(ious))
  # The same numbers after config.json.
  again = quality.QualityFit.from_json(json.loads(json.dumps(fit.to_json())))
  assert again == fit
  scores = quality.score_from_parts(parts, again).numpy()
  assert quality.auroc(scores, ious > np.median(ious)) > 0.9
  # Every IoU equal: no two classes to tell apart, nothing fitted.
  assert quality.fit_parts(parts, np.full(200, 0.5), 0, "s") is None
  assert quality.fit_parts(parts[:1], ious[:1], 0, "s") is None
  assert quality.QualityFit.from_json(None) is None
  other = dict(fit.to_json(), parts=["entropy"])
  with pytest.raises(errors.UserError, match="select the setting again"):
    quality.QualityFit.from_json(other)


def _png(rng, h, w):
  rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
  return rgb, tf.io.encode_png(rgb).numpy()


def test_served_score_equals_the_in_process_value(tiny_run, eval_examples,
                                                  tmp_path):
  """Fitted on a split, recorded in config.json, exported: every signature,
  the segmenter (run and export) and predictions.jsonl carry the score the
  library computes in process."""
  run_dir = str(tmp_path / "run")
  config, model = tiny_run(run_dir, width=8, crop_size=32)
  examples = eval_examples(sizes=((64, 64), (56, 72), (64, 48), (40, 64),
                                  (48, 48), (64, 36)), seed=3)
  fit = quality.fit(model, examples, 1, 21, "val[:2]")
  assert fit is not None and fit.t_test == 1 and fit.num_images == 6
  config.latent.t_test = 1
  quality.record(config, fit)
  with open(os.path.join(run_dir, "config.json")) as f:
    assert json.load(f)["quality"] == fit.to_json()
  path = export_lib.export_from_model_dir(run_dir, str(tmp_path / "export"))
  loaded = tf.saved_model.load(path)
  size = config.data.eval_size()
  rng = np.random.default_rng(0)
  (a, a_png), (b, b_png) = _png(rng, 40, 56), _png(rng, 64, 30)

  def local(rgb, t):
    return quality.score_image(
        model, image_ops.normalize_image(tf.constant(rgb[None], tf.float32)),
        t, fit, canvas_size=size)

  expected = np.array([local(a, 1), local(b, 1)])
  assert expected.min() >= 0 and expected.max() <= 1
  assert not np.allclose(expected, quality.score_image(
      model, image_ops.normalize_image(tf.constant(a[None], tf.float32)),
      1, None, canvas_size=size))  # The fit is used, not the fallback.
  served = loaded.signatures["serving_default"](
      image_bytes=tf.constant([a_png, b_png]))["quality"].numpy()
  np.testing.assert_allclose(served, expected, atol=1e-4)
  steps = loaded.signatures["serving_steps"](
      image_bytes=tf.constant([a_png, b_png]),
      steps=tf.constant([0, 2]))["quality"].numpy()
  np.testing.assert_allclose(steps, [local(a, 0), local(b, 2)], atol=1e-4)
  tensor = loaded.signatures["predict_images"](
      images=tf.constant(a[None]))["quality"].numpy()
  np.testing.assert_allclose(tensor, expected[:1], atol=1e-4)
  meta = loaded.signatures["metadata"]()
  assert meta["quality_score"].numpy().decode() == fit.describe()

  files = []
  for name, png in (("a.png", a_png), ("b.png", b_png)):
    files.append(str(tmp_path / name))
    with open(files[-1], "wb") as f:
      f.write(png)
  for source in (run_dir, path):
    seg = segmenter_lib.load_segmenter(source)
    results = seg.segment(files)
    np.testing.assert_allclose([r.quality for r in results], expected,
                               atol=1e-4)
    out = str(tmp_path / f"predict_{len(source)}")
    segmenter_lib.predict_files(seg, files, out, progress=False)
    with open(os.path.join(out, "predictions.jsonl")) as f:
      records = [json.loads(line) for line in f]
    np.testing.assert_allclose([r["quality"] for r in records], expected,
                               atol=2e-4)
