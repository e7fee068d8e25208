"""DISModel: latent inference, the training phases, stage 2, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import image_ops
from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling import dis_model as dis_model_lib
from dis_tf.modeling.dis_model import DISModel

SIZE = 64


def _batch(batch_size=4, seed=0, weak=None):
  rng = np.random.RandomState(seed)
  image = rng.randn(batch_size, SIZE, SIZE, 3).astype(np.float32)
  mask = rng.randint(0, 21, size=(batch_size, SIZE, SIZE)).astype(np.int32)
  mask[:, :4] = 255
  tags = (rng.rand(batch_size, 21) > 0.7).astype(np.float32)
  tags[:, 0] = 1.0
  batch = {"image": image, "mask": mask, "tags": tags,
           "image_small": image_ops.image_target(image, (8, 8)).numpy()}
  if weak is not None:
    # float32 0/1, as the pipeline emits: Keras' distributed input handling
    # fails on bool features under MirroredStrategy.
    batch["is_weak"] = np.array(weak, np.float32)
  return batch


def _weights(model):
  return {v.path: v.numpy().copy() for v in model.weights}


def test_outputs_are_named_dicts(tiny_model):
  model = tiny_model()
  out = model({"image": _batch()["image"]})
  assert set(out) == {"labelmap_logits", "reconstruction", "tag_logits"}
  assert out["labelmap_logits"].shape == (4, 8, 8, 21)
  assert out["reconstruction"].shape == (4, 8, 8, 3)
  assert out["tag_logits"].shape == (4, 21)


def test_latent_inference_lowers_image_loss_and_freezes_weights(tiny_model):
  model = tiny_model()
  batch = _batch()
  before = _weights(model)
  result0 = model.infer(batch["image"], steps=0)
  result = model.infer(batch["image"], steps=20, step_size=0.5)
  assert np.all(result["objective"].numpy() < result0["objective"].numpy())
  for path, value in _weights(model).items():
    np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_training_mode_lowers_image_plus_tag_objective(tiny_model):
  model = tiny_model()
  batch = _batch()
  r0 = model.infer(batch["image"], steps=0, tags=batch["tags"])
  r = model.infer(batch["image"], steps=20, tags=batch["tags"], step_size=0.5)
  assert np.all(r["objective"].numpy() < r0["objective"].numpy())
  # The tag term is part of it: training and test objectives differ.
  rt = model.infer(batch["image"], steps=0)
  assert np.all(r0["objective"].numpy() > rt["objective"].numpy())


def test_latent_objective_is_n_times_the_training_losses(tiny_model):
  # Eq. (1) uses the same L^img and L^tag in both parts: the latent objective
  # is n * (image_weight * MSE + tag_weight * mean BCE), n = h*w*3.
  model = tiny_model()
  batch = _batch()
  u1, v1 = model.backbone(batch["image"])
  target = batch["image_small"]
  tags = batch["tags"]
  got = latent_lib.latent_objective(model, u1, v1, target, tags,
                                   image_weight=0.7, tag_weight=2.0).numpy()
  z3 = model.subnet2(model.subnet1(u1, v1)).numpy()
  v3 = model.subnet3(u1, v1).numpy().astype(np.float64)
  n = np.prod(z3.shape[1:])
  mse = np.mean((z3 - target) ** 2, axis=(1, 2, 3))
  t, x = tags[:, 1:], v3[:, 1:]
  bce = np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))),
                axis=-1)
  np.testing.assert_allclose(got, n * (0.7 * mse + 2.0 * bce), rtol=1e-5)


def test_training_mode_at_zero_steps_uses_the_given_tags(tiny_model):
  # Table 3 setup 1 (t_train = 0): nothing is inferred, so the given tags
  # are the cleaned tags and refine the plain prediction.
  model = tiny_model()
  batch = _batch()
  tags = batch["tags"]
  r = model.infer(batch["image"], steps=0, tags=tags)
  np.testing.assert_allclose(r["tag_probabilities"][:, 1:], tags[:, 1:],
                             atol=1e-5)
  probs = tf.nn.softmax(r["u3"]).numpy()
  scaled = probs * np.concatenate([np.ones_like(tags[:, :1]), tags[:, 1:]],
                                  -1)[:, None, None, :]
  expected = scaled / scaled.sum(-1, keepdims=True)
  np.testing.assert_allclose(r["probabilities"], expected, atol=1e-5)
  # After a step the cleaned tags are the network's inferred ones again.
  r1 = model.infer(batch["image"], steps=1, tags=tags)
  np.testing.assert_allclose(r1["tag_probabilities"][:, 1:],
                             tf.sigmoid(r1["v3"])[:, 1:], rtol=1e-6)
  # Stage-2 pseudo targets of a t_train = 0 model: the given tags.
  setup1 = tiny_model(t_train=0)
  _, _, cleaned = setup1.pseudo_targets(
      *setup1.backbone(batch["image"]), batch["image_small"], tags,
      batch["mask"])
  np.testing.assert_array_equal(cleaned, tags)


def test_steps_zero_equals_forward_pass(tiny_model):
  model = tiny_model()
  image = _batch()["image"]
  out = model({"image": image})
  result = model.infer(image, steps=0)
  np.testing.assert_array_equal(result["u3"], out["labelmap_logits"])
  np.testing.assert_array_equal(result["v3"], out["tag_logits"])


def test_infer_runs_the_backbone_once(tiny_model, backbone_calls):
  model = tiny_model()
  with backbone_calls(model) as calls:
    model.infer(_batch()["image"], steps=7)
  assert len(calls) == 1


@pytest.mark.parametrize("step_size", [1e6, 1e12])
@pytest.mark.parametrize("clip_norm", [10.0, None])
def test_absurd_step_sizes_never_give_nan(step_size, clip_norm, tiny_model):
  model = tiny_model()
  batch = _batch()
  result = model.infer(batch["image"], steps=10, tags=batch["tags"],
                       step_size=step_size, clip_norm=clip_norm,
                       return_features=True)
  for key, value in result.items():
    assert np.all(np.isfinite(value.numpy())), key


def test_one_trace_serves_every_step_count(tiny_model):
  model = tiny_model()
  image = _batch()["image"]
  traces = []

  @tf.function
  def run(steps):
    traces.append(1)
    return model.infer(image, steps=steps)["u3"]

  a = run(tf.constant(0))
  b = run(tf.constant(5))
  run(tf.constant(50))
  assert len(traces) == 1
  assert not np.allclose(a, b)


def test_latent_inference_accepts_any_heads_object(tiny_model):
  # The function is the one implementation: it needs only the three subnets.
  model = tiny_model()
  u1, v1 = model.backbone(_batch()["image"])
  heads = type("Heads", (), {"subnet1": model.subnet1,
                             "subnet2": model.subnet2,
                             "subnet3": model.subnet3})()
  target = image_ops.image_target(_batch()["image"], (8, 8))
  a = latent_lib.latent_inference(heads, u1, v1, target, steps=3,
                                 step_size=1.0, clip_norm=10.0,
                                 update=model.latent_update)
  b = model.latent(u1, v1, target, steps=3, step_size=1.0, clip_norm=10.0)
  np.testing.assert_allclose(a["u3"], b["u3"], rtol=1e-6)


def _changed_parts(model, phase, batch):
  model.set_phase(phase)
  model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=False)
  before = _weights(model)
  model.train_on_batch(batch)
  owner = {}
  for part in ("backbone", "subnet1", "subnet2", "subnet3"):
    for variable in getattr(model, part).weights:
      owner[variable.path] = part
  changed = set()
  for path, value in _weights(model).items():
    if not np.array_equal(value, before[path]):
      changed.add(owner[path])
  return changed


@pytest.mark.parametrize("phase, expected", [
    ("a", {"backbone", "subnet1", "subnet3"}),
    ("b", {"subnet2"}),
    ("c", {"backbone", "subnet1", "subnet2", "subnet3"}),
])
def test_each_stage1_phase_changes_exactly_its_variables(phase, expected,
                                                        tiny_model):
  model = tiny_model()
  assert _changed_parts(model, phase, _batch()) == expected


def test_resnet_phases_keep_batchnorm_frozen():
  backbone = dis_model_lib.backbones_lib.build_backbone("resnet50")
  model = DISModel(backbone, num_classes=21, phase="a")
  bn_vars = [v.path for v in model.trainable_variables if "_bn/" in v.path]
  assert not bn_vars
  model.set_phase("b")
  model.set_phase("c")
  assert not [v for v in model.trainable_variables if "_bn/" in v.path]
  assert any("conv5_block3_3_conv" in v.path for v in model.trainable_variables)


def test_stage2_step_on_mixed_batch_and_backbone_once_per_step(
    tiny_model, backbone_calls):
  model = tiny_model(t_train=3)
  model.set_phase("semi")
  model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
  batch = _batch(weak=[True, False, True, False])
  before = _weights(model)
  with backbone_calls(model) as calls:
    logs = model.train_on_batch(batch, return_dict=True)
  assert len(calls) == 1
  assert all(np.isfinite(v) for v in logs.values())
  assert any(not np.array_equal(v, before[k])
             for k, v in _weights(model).items())


def test_pseudo_labels_have_no_gradient_path(tiny_model):
  model = tiny_model(t_train=2, soft_pseudo_labels=True)
  model.set_phase("semi")
  batch = _batch(weak=[True, True, False, False])
  with tf.GradientTape(persistent=True) as tape:
    u1, v1 = model.backbone(batch["image"])
    labels, soft, tags = model.pseudo_targets(
        u1, v1, batch["image_small"], batch["tags"], batch["mask"])
    soft_sum = tf.reduce_sum(soft)
    tag_sum = tf.reduce_sum(tags)
  variables = model.trainable_variables
  assert all(g is None for g in tape.gradient(soft_sum, variables))
  assert all(g is None for g in tape.gradient(tag_sum, variables))
  assert tape.gradient(soft_sum, u1) is None
  # Ignore region of the weak images is kept.
  assert np.all(labels.numpy()[:, :4] == 255)
  assert labels.shape == batch["mask"].shape


def test_weak_examples_use_pseudo_labels_and_full_ones_their_masks(
    tiny_model):
  model = tiny_model(t_train=0)
  model.set_phase("semi")
  batch = _batch(weak=[True, False, True, False])
  u1, v1 = model.backbone(batch["image"])
  mask, _, tags = model._targets(batch, u1, v1, batch["image_small"])
  np.testing.assert_array_equal(mask.numpy()[1], batch["mask"][1])
  np.testing.assert_array_equal(tags.numpy()[3], batch["tags"][3])
  pseudo, _, cleaned = model.pseudo_targets(
      u1, v1, batch["image_small"], batch["tags"], batch["mask"])
  np.testing.assert_array_equal(mask.numpy()[0], pseudo.numpy()[0])
  np.testing.assert_array_equal(tags.numpy()[2], cleaned.numpy()[2])


@pytest.mark.parametrize("weak", [[True, False, True, False],
                                  [False, False, False, True],
                                  [True, True, True, True],
                                  [False, False, False, False]])
@pytest.mark.parametrize("soft_pseudo_labels", [False, True])
def test_latent_loop_on_weak_rows_only_equals_the_full_batch_run(
    tiny_model, weak, soft_pseudo_labels):
  # `_targets` runs the latent loop on the weak rows alone; each example's
  # descent is independent, so those rows match a run on the whole batch.
  model = tiny_model(t_train=5, soft_pseudo_labels=soft_pseudo_labels)
  model.set_phase("semi")
  batch = _batch(weak=weak)
  u1, v1 = model.backbone(batch["image"])
  mask, soft, tags = tf.function(model._targets)(
      batch, u1, v1, batch["image_small"])
  full_mask, full_soft, full_tags = model.pseudo_targets(
      u1, v1, batch["image_small"], batch["tags"], batch["mask"])
  for i, is_weak in enumerate(weak):
    want_mask = full_mask[i] if is_weak else batch["mask"][i]
    want_tags = full_tags[i] if is_weak else batch["tags"][i]
    np.testing.assert_array_equal(mask[i], want_mask)
    np.testing.assert_allclose(tags[i], want_tags, atol=1e-6)
    if soft_pseudo_labels:
      want = (full_soft[i] if is_weak else
              tf.one_hot(np.where(batch["mask"][i] == 255, 0,
                                  batch["mask"][i]), 21))
      np.testing.assert_allclose(soft[i], want, atol=1e-5)
    else:
      assert soft is None


@pytest.mark.parametrize("method", ["gram", "direct"])
@pytest.mark.parametrize("with_tags", [True, False])
def test_xla_compiled_step_is_the_same_descent(tiny_model, method, with_tags):
  model = tiny_model()
  batch = _batch()
  u1, v1 = model.backbone(batch["image"])
  tags = batch["tags"] if with_tags else None
  run = lambda jit: tf.function(lambda: model.latent(
      u1, v1, batch["image_small"], tags=tags, steps=10, method=method,
      jit_step=jit))()
  plain, jit = run(False), run(True)
  np.testing.assert_allclose(jit["u3"], plain["u3"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(jit["v3"], plain["v3"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(jit["objective"], plain["objective"],
                             rtol=1e-4)
  # The 10 steps moved the latents (the comparison is not of two no-ops).
  start = model.latent(u1, v1, batch["image_small"], tags=tags, steps=0)
  assert np.abs(plain["u3"] - start["u3"]).max() > 1e-2


def test_stage2_pseudo_labels_use_the_jit_setting(tiny_model, monkeypatch):
  seen = []
  original = latent_lib.latent_inference

  def spy(*args, **kwargs):
    seen.append(kwargs.get("jit_step"))
    return original(*args, **kwargs)

  monkeypatch.setattr(latent_lib, "latent_inference", spy)
  for jit in (True, False):
    model = tiny_model(t_train=2, jit_train_step=jit)
    model.set_phase("semi")
    batch = _batch(weak=[True, False, True, False])
    u1, v1 = model.backbone(batch["image"])
    model._targets(batch, u1, v1, batch["image_small"])
    assert seen[-1] is jit
    # Test-mode inference (evaluation, export) never compiles with XLA.
    model.infer(batch["image"], steps=1)
    assert seen[-1] is False


def test_get_config_round_trip_and_keras_file(tmp_path, tiny_model):
  model = tiny_model(t_train=4)
  model.set_phase("semi")
  config = model.get_config()
  clone = DISModel.from_config(config)
  assert clone.get_config()["t_train"] == 4
  assert clone.latent_jit_train_step       # The synthetic preset's.
  assert clone.phase == "semi"
  path = str(tmp_path / "dis.keras")
  model.save(path)
  loaded = keras.saving.load_model(path, safe_mode=True)
  assert isinstance(loaded, DISModel)
  assert loaded.latent_jit_train_step
  image = _batch()["image"]
  for key, value in model({"image": image}).items():
    np.testing.assert_allclose(loaded({"image": image})[key], value,
                               rtol=1e-5, atol=1e-5)


def test_fit_lowers_the_loss(tiny_model):
  model = tiny_model()
  model.set_phase("c")
  model.compile(optimizer=keras.optimizers.Adam(3e-3))
  # A learnable batch: each quadrant is one class with its own colour.
  batch = _batch(batch_size=4)
  rng = np.random.RandomState(1)
  half = SIZE // 2
  for i in range(4):
    classes = rng.randint(1, 21, size=4)
    colours = rng.randn(21, 3).astype(np.float32)
    for q, (y, x) in enumerate([(0, 0), (0, half), (half, 0), (half, half)]):
      batch["mask"][i, y:y + half, x:x + half] = classes[q]
      batch["image"][i, y:y + half, x:x + half] = colours[classes[q]]
  batch["image_small"] = image_ops.image_target(batch["image"], (8, 8)).numpy()
  dataset = tf.data.Dataset.from_tensors(batch).repeat(30)
  history = model.fit(dataset, epochs=3, verbose=0, shuffle=False)
  losses = history.history["loss"]
  assert losses[-1] < 0.8 * losses[0]
  assert 0.0 <= history.history["mean_iou"][-1] <= 1.0


def test_mirrored_strategy_step_equals_single_device_step(tiny_model):
  # conftest.pytest_configure sets up two logical CPUs (or fails the run).
  assert len(tf.config.list_logical_devices("CPU")) >= 2
  batch = _batch(batch_size=4, weak=[True, False, True, False])

  def one_step(strategy):
    with strategy.scope():
      model = tiny_model(seed=3, t_train=2)
      model.set_phase("semi")
      model.compile(optimizer=keras.optimizers.SGD(0.05))
    dataset = tf.data.Dataset.from_tensors(batch)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return _weights(model)

  single = one_step(tf.distribute.get_strategy())
  mirrored = one_step(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
  for path, value in single.items():
    np.testing.assert_allclose(mirrored[path], value, rtol=1e-4, atol=1e-5,
                               err_msg=path)
