"""One preprocessing for evaluation and serving: the fit-to-canvas rule.

Evaluation, the setting selection, the ablation, the export, the segmenter
and tools/predict.py all fit an image into the model's canvas with
`image_ops.fit_to_canvas` and map the prediction back with
`image_ops.canvas_to_original_matrices`; these tests check the rule against
a hand computation and that evaluation and the serving module call it and
give the same labelmap.
"""

import numpy as np
import pytest
import tensorflow as tf

from dis_tf import evaluation
from dis_tf import image_ops
from dis_tf.modeling import subnets
from dis_tf.serving import inputs as inputs_lib
from dis_tf.serving import module as module_lib

SIZE = 32


@pytest.mark.parametrize("height, width, fitted", [
    (75, 100, (24, 32)), (100, 75, (32, 24)), (10, 10, (32, 32)),
    (500, 3, (32, 1)), (32, 32, (32, 32))])
def test_fit_keeps_the_aspect_and_pads_with_the_mean(height, width, fitted):
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (1, height, width, 3)).astype(np.uint8)
  canvas, got = image_ops.fit_to_canvas(image, SIZE)
  assert tuple(got.numpy()) == fitted
  assert canvas.shape == (1, SIZE, SIZE, 3)
  inside = image_ops.normalize_image(tf.image.resize(image, fitted))
  np.testing.assert_allclose(canvas[:, :fitted[0], :fitted[1]], inside,
                             atol=1e-5)
  # The padding is the mean colour: 0 after normalisation.
  assert not np.any(canvas[:, fitted[0]:].numpy())
  assert not np.any(canvas[:, :, fitted[1]:].numpy())
  # A normalised input gives the same canvas (resize is linear).
  again, _ = image_ops.fit_to_canvas(image_ops.normalize_image(image), SIZE,
                                     normalized=True)
  np.testing.assert_allclose(again, canvas, atol=1e-5)


def test_canvas_to_original_is_resize_crop_resize():
  probs = tf.random.stateless_uniform([4, 4, 5], seed=[1, 2])
  fitted, original = (24, 32), (75, 100)
  got = image_ops.canvas_to_original(probs, fitted, original, SIZE)
  canvas = tf.image.resize(probs[None], [SIZE, SIZE])
  expected = tf.image.resize(canvas[:, :24, :32], original)[0]
  np.testing.assert_allclose(got, expected, atol=1e-5)


def _images():
  rng = np.random.RandomState(3)
  return [rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
          for h, w in ((40, 64), (70, 30), (32, 32))]


def test_serving_and_evaluation_give_the_same_labelmap(tiny_model):
  model = tiny_model(crop_size=SIZE)
  model.tag_refinement = 2.0  # A refinement is applied alike too.
  module = module_lib.build_serving_module(model, 3, None)
  assert module.input_size == model.eval_crop_size == SIZE
  encoded = [tf.io.encode_png(image).numpy() for image in _images()]
  served = module_lib.predict_in_process(model, encoded, 3, None,
                                         module=module)
  for i, image in enumerate(_images()):
    probs = evaluation.predict(model, image_ops.normalize_image(image), [3])[
        3]["probabilities"]
    h, w = image.shape[:2]
    ids = served["class_ids"][i, :h, :w]
    assert (ids == np.argmax(probs, -1)).mean() > 0.999


def test_a_served_labelmap_does_not_depend_on_its_batch(tiny_model):
  model = tiny_model(crop_size=SIZE)
  module = module_lib.build_serving_module(model, 2, None)
  encoded = [tf.io.encode_png(image).numpy() for image in _images()]
  batch = module_lib.predict_in_process(model, encoded, 2, None,
                                        module=module)
  for i, one in enumerate(encoded):
    alone = module_lib.predict_in_process(model, [one], 2, None,
                                          module=module)
    h, w = alone["height"][0], alone["width"][0]
    np.testing.assert_array_equal(batch["class_ids"][i, :h, :w],
                                  alone["class_ids"][0, :h, :w])


def test_evaluation_and_serving_call_the_one_fit_function(tiny_model,
                                                          monkeypatch):
  calls = []
  fit = image_ops.fit_to_canvas

  def counting(*args, **kwargs):
    calls.append(args[1])
    return fit(*args, **kwargs)

  monkeypatch.setattr(image_ops, "fit_to_canvas", counting)
  model = tiny_model(crop_size=SIZE)
  image = _images()[0]
  evaluation.predict(model, image_ops.normalize_image(image), [0])
  assert calls == [SIZE]
  # A fresh module traces its signatures, which call the same function.
  module = module_lib.build_serving_module(model, 0, None)
  module_lib.predict_in_process(model, [tf.io.encode_png(image).numpy()], 0,
                                None, module=module)
  module_lib.predict_in_process(model, image[None], 0, None, module=module)
  assert calls.count(SIZE) == 3
  assert inputs_lib.image_ops is image_ops


def test_predict_builds_the_resize_matrices_once_per_variant(tiny_model,
                                                            monkeypatch):
  # Building them eagerly cost more than the latent loop when every map
  # (t_test x final prediction) built its own; the maps must not change.
  calls = []
  build = image_ops.canvas_to_original_matrices

  def counting(*args, **kwargs):
    calls.append(args)
    return build(*args, **kwargs)

  monkeypatch.setattr(image_ops, "canvas_to_original_matrices", counting)
  model = tiny_model(crop_size=SIZE)
  image = image_ops.normalize_image(_images()[1])
  refinements = [None, 0.0, 2.0]
  out = evaluation.predict(model, image, [0, 2], flip=True,
                           refinements=refinements)
  assert len(calls) == 2  # The plain and the flipped pass.
  maps = {r: 0.0 for r in refinements}
  for flip in (False, True):
    x = tf.reverse(image[None], [2]) if flip else image[None]
    canvas, fitted = image_ops.fit_to_canvas(x, SIZE, normalized=True)
    t0 = model.infer(canvas, tf.constant(0), return_features=True)
    for r in refinements:
      one = image_ops.canvas_to_original(
          subnets.refine_labelmap(t0["u3"], t0["v3"], r)[0], fitted,
          image.shape[:2], SIZE)
      maps[r] += tf.reverse(one, [1]) if flip else one
  for r in refinements:
    np.testing.assert_allclose(out[0]["by_refinement"][r], maps[r] / 2,
                               atol=1e-5)
