"""`model.precision`: the backbone in a Keras dtype policy, everything after
it float32 (issue 29).

The backbone's layers compute in the policy's dtype; its output is cast to
float32 (`DISModel.features`), so the subnets, the latent variables u1 / v1,
the latent objective, the Gram fields and the latent steps are float32
under every policy. Direct == gram under every policy is in
tests/test_gram.py (`test_model_infer_paths_agree_and_features_continue_
exactly`); the export's precision in tests/test_export.py.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import image_ops
from dis_tf import training
from dis_tf.modeling import gram as gram_lib
from dis_tf.modeling.dis_model import DISModel
from dis_tf.research import tables

import bench_modules  # tests/bench_modules.py

COMPUTE = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16,
           "mixed_float16": tf.float16}


def _image(seed=0, size=64, batch=2):
  return np.random.RandomState(seed).randn(batch, size, size, 3).astype(
      np.float32)


@pytest.mark.parametrize("method", ["gram", "direct"])
@pytest.mark.parametrize("precision", config_lib.PRECISIONS)
def test_latent_loop_tensors_are_float32_under_every_policy(precision, method,
                                                           tiny_model):
  model = tiny_model(precision=precision, crop_size=64, method=method)
  image = _image()
  # The backbone really computes in the policy's dtype ...
  raw_u1, raw_v1 = model.backbone(image)
  assert raw_u1.dtype == COMPUTE[precision]
  assert raw_v1.dtype == COMPUTE[precision]
  # ... and what leaves it is float32.
  u1, v1 = model.features(image)
  assert (u1.dtype, v1.dtype) == (tf.float32, tf.float32)
  for layer in (model.subnet1, model.subnet2, model.subnet3):
    assert layer.dtype_policy.name == "float32", layer.name
  tags = (np.random.RandomState(1).rand(2, 21) > 0.7).astype(np.float32)
  for given in (None, tags):          # test mode, training mode
    result = model.infer(image, steps=3, tags=given, return_features=True)
    for key in ("u1", "v1", "u3", "v3", "probabilities", "tag_probabilities",
                "objective", "image_target"):
      assert result[key].dtype == tf.float32, (key, result[key].dtype)
      assert np.all(np.isfinite(result[key].numpy())), key
  outputs = model.forward(image)
  for key in ("labelmap_logits", "reconstruction", "tag_logits"):
    assert outputs[key].dtype == tf.float32, key
  fields = gram_lib.GramOperator.from_heads(model).fields()
  assert all(f.dtype == tf.float32 for f in fields)
  # The stage-2 pseudo targets (training-mode latent loop) too.
  target = image_ops.image_target(image, tf.shape(u1)[1:3])
  mask = np.zeros([2, 64, 64], np.int32)
  labels, _, cleaned = model.pseudo_targets(u1, v1, target, tags, mask)
  assert labels.dtype == tf.int32 and cleaned.dtype == tf.float32


def test_bfloat16_backbone_is_close_to_float32(tiny_model):
  """Same weights, same image: the bf16 backbone's features are within a
  few percent (relative L2) of the float32 ones; the variables stay
  float32 (so the weights and saved files do not depend on precision)."""
  model = tiny_model(crop_size=64)
  image = _image(2)
  u32, _ = model.features(image)
  model.configure(**{**_settings(model), "precision": "mixed_bfloat16"})
  u16, _ = model.features(image)
  assert all(v.dtype == "float32" for v in model.weights)
  rel = float(tf.norm(u16 - u32) / tf.norm(u32))
  assert 0 < rel < 0.03, rel
  model.configure(**{**_settings(model), "precision": "float32"})
  np.testing.assert_array_equal(model.features(image)[0], u32)


def _settings(model):
  config = model.get_config()
  names = ("map_weight", "image_weight", "tag_weight", "t_train",
           "latent_step_size", "latent_clip_norm", "soft_pseudo_labels",
           "tag_threshold", "latent_method", "latent_update",
           "latent_train_update", "latent_monotone", "latent_jit_train_step",
           "tag_refinement", "eval_crop_size", "precision")
  return {name: config[name] for name in names}


def test_model_config_and_keras_file_carry_the_precision(tiny_model,
                                                         tmp_path):
  model = tiny_model(precision="mixed_bfloat16", crop_size=64)
  assert model.get_config()["precision"] == "mixed_bfloat16"
  clone = DISModel.from_config(model.get_config())
  assert clone.precision == "mixed_bfloat16"
  assert clone.backbone(_image())[0].dtype == tf.bfloat16
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.saving.load_model(path, safe_mode=True)
  assert loaded.precision == "mixed_bfloat16"
  assert loaded.backbone(_image())[0].dtype == tf.bfloat16
  np.testing.assert_allclose(loaded.infer(_image(), steps=2)["u3"],
                             model.infer(_image(), steps=2)["u3"],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r"--model\.precision='float8'"):
    DISModel(model.backbone, precision="float8")


def test_config_field_round_trips_and_refuses_a_bad_value():
  config = config_lib.synthetic()
  assert config.model.precision == "float32"                # the default
  assert config_lib.voc12().model.precision == "float32"
  config_lib.apply_overrides(config, {"model.precision": "mixed_bfloat16"})
  again = config_lib.ExperimentConfig.from_dict(config.to_dict())
  assert again.model.precision == "mixed_bfloat16"
  with pytest.raises(errors.UserError, match=r"model\.precision='bf16'.*"
                     r"mixed_bfloat16"):
    config_lib.apply_overrides(config, {"model.precision": "bf16"})
  values = config.to_dict()
  values["model"]["precision"] = "half"
  with pytest.raises(errors.UserError, match=r"--model\.precision='half'"):
    config_lib.ExperimentConfig.from_dict(values)
  with pytest.raises(errors.UserError, match=r"--model\.precision='half'"):
    config_lib.ModelConfig(precision="half")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_a_training_step_under_mixed_precision(precision, tiny_model):
  """The optimizer of `training.make_optimizer` (loss-scaled under
  mixed_float16) takes finite steps that change the backbone's float32
  weights."""
  model = tiny_model(precision=precision, crop_size=32)
  train_config = config_lib.synthetic().train
  optimizer = training.make_optimizer(train_config, 1e-3, 10, precision)
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (
      precision == "mixed_float16")
  model.compile(optimizer=optimizer)
  rng = np.random.RandomState(3)
  image = rng.randn(2, 32, 32, 3).astype(np.float32)
  x = {"image": image, "mask": rng.randint(0, 21, (2, 32, 32)),
       "tags": (rng.rand(2, 21) > 0.7).astype(np.float32)}
  kernel = model.backbone.get_layer("tiny_conv1").kernel
  before = kernel.numpy()
  logs = model.train_on_batch(x, return_dict=True)
  assert np.isfinite(logs["loss"]), logs
  assert kernel.dtype == "float32"
  assert not np.array_equal(kernel.numpy(), before)


def test_bench_refuses_the_no_bf16_section_on_a_cpu_with_bf16_units():
  # bench/precision.py's section of a CPU without bf16 units must not be
  # overwritten by a run whose numbers say the opposite.
  precision = bench_modules.load("precision")
  section = precision.NO_BF16_SECTION
  with_units = {"amx_bf16": False, "avx512_bf16": True}
  without = {"amx_bf16": False, "avx512_bf16": False}
  assert "this one has" in precision.section_error(section, with_units)
  assert precision.section_error(section, without) is None
  assert precision.section_error("precision", with_units) is None


def _paired(per_seed):
  return tables.paired_stats([x / 100 for x in per_seed], [0.0] * len(per_seed))


@pytest.mark.parametrize("per_seed, expected", [
    ([0.01, -0.04, 0.02, 0.0, 0.03], "met"),           # interval inside
    ([0.5, 0.6, 0.55, 0.45, 0.52], "missed"),           # wholly above
    ([-0.6, -0.5, -0.7, -0.55, -0.65], "missed"),       # wholly below
    ([0.1, 0.4, -0.2, 0.5, 0.3], "not resolved"),       # straddles +0.3
    ([0.01], "not resolved"),                           # no interval
])
def test_bench_within_verdict_is_the_two_sided_interval_rule(per_seed,
                                                             expected):
  readings = bench_modules.load("precision_readings")
  assert readings.within_verdict(_paired(per_seed), 0.3) == expected


def test_bench_miou_lines_pair_the_models_per_setting():
  readings = bench_modules.load("precision_readings")
  per_model = [
      {"float32": {"t=0": 50.0, "t=10": 51.0},
       "mixed_bfloat16": {"t=0": 50.02, "t=10": 50.5}},
      {"float32": {"t=0": 40.0, "t=10": 41.0},
       "mixed_bfloat16": {"t=0": 39.99, "t=10": 40.4}},
      {"float32": {"t=0": 45.0, "t=10": 46.0},
       "mixed_bfloat16": {"t=0": 45.01, "t=10": 45.45}},
  ]
  text = "\n".join(readings.miou_lines(
      ["a", "b", "c"], "val[100:]", per_model, ["s0", "s1", "s2"],
      ["python tools/evaluate.py ..."]))
  # t=0 within 0.3 (differences +0.02, -0.01, +0.01); t=10 wholly below
  # -0.3 (-0.5, -0.6, -0.55).
  assert "| t=0 | +0.01 (sd 0.02" in text
  assert "| t=10 | -0.55 (sd 0.05" in text
  assert text.count("| met |") == 1 and text.count("| missed |") == 1
  assert "paired over 3 model(s): **missed**" in text
  assert "largest |bf16 - float32| of any one model and setting: 0.60" in text
  assert "`b` (s1)" in text


def test_bench_latent_floor_conclusion_follows_the_numbers():
  readings = bench_modules.load("precision_readings")

  def times(t0_bf16):
    """(t0, t30, backbone) seconds by precision."""
    return ({"float32": 0.45, "mixed_bfloat16": t0_bf16},
            {"float32": 0.53, "mixed_bfloat16": t0_bf16 + 0.08},
            {"float32": 0.44, "mixed_bfloat16": 0.22})

  # 30 steps of 160 MFLOP = 4.8 GFLOP in 80 ms (60 GFLOP/s); the backbone
  # 176 GFLOP in 0.44 s (400 GFLOP/s). Under bf16 the budget is 5% of t=0:
  # at 0.20 s, 10 ms, 480 GFLOP/s, 1.2x the backbone's rate; at 0.24 s,
  # 12 ms, 400 GFLOP/s, the backbone's; at 0.40 s, 20 ms, 240 GFLOP/s, 0.6x.
  slow = readings.latent_floor_text(*times(0.20), 176e9, 160e6)
  assert "at a higher FLOP rate than the backbone's" in slow
  assert "small ops run at 15% of that rate" in slow
  assert "would be 1.027 under float32 and 1.060 under bf16" in slow
  about = readings.latent_floor_text(*times(0.24), 176e9, 160e6)
  assert "at about the FLOP rate of the backbone's" in about
  fast = readings.latent_floor_text(*times(0.40), 176e9, 160e6)
  assert "reachable in principle" in fast
  assert "(15% of the float32 backbone's)" in fast    # 60 / 400
  t0, t30, backbone = times(0.20)
  t30["float32"] = 0.44    # t=30 faster than t=0: noise
  assert "within the noise" in readings.latent_floor_text(
      t0, t30, backbone, 176e9, 160e6)


def test_bench_model_summary_reads_config_and_fingerprint(tmp_path):
  readings = bench_modules.load("precision_readings")
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "config.json").write_text(json.dumps({
      "train": {"seed": 3}, "latent": {"t_train": 5},
      "model": {"precision": "float32"}}))
  assert readings.model_summary(str(tmp_path)) == (
      "seed 3, t_train 5, trained in float32 by an unrecorded commit")
  (tmp_path / "checkpoints" / "phase_semi.fingerprint.json").write_text(
      json.dumps({"fields": {}, "code_version": {"commit": "abcdef0123",
                                                 "dirty": True}}))
  assert readings.model_summary(str(tmp_path)).endswith(
      "by abcdef0 with uncommitted changes")


def test_bench_agreement_lines_judge_the_fewest_equal_pixels():
  readings = bench_modules.load("precision_readings")
  text = "\n".join(readings.agreement_lines(
      ["a", "b"], ["s0", "s1"], [(0.999, 1000, 0), (0.985, 2000, 10)]))
  assert "| `b` (s1) | 10 | 2000 | 98.50% |" in text
  assert "fewest over the models (fraction of pixels): 0.985" in text
  assert "**missed**" in text
  met = "\n".join(readings.agreement_lines(
      ["a"], ["s0"], [(0.995, 1000, 0)]))
  assert "**met**" in met
