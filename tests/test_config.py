"""dis_tf.config: presets, typed overrides, config.json round trips."""

import json

import pytest

from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf.modeling import latent as latent_lib
from dis_tf.modeling import backbones
from dis_tf.modeling import dis_model


def test_presets_resolve_and_unknown_preset_is_named():
  for name in config_lib.PRESETS:
    assert isinstance(config_lib.resolve_config(name),
                      config_lib.ExperimentConfig)
  with pytest.raises(ValueError, match="preset"):
    config_lib.resolve_config("cityscapes", {})


def test_every_field_is_overridable_with_its_type():
  specs = config_lib.fields()
  keys = [spec.key for spec in specs]
  assert len(keys) == len(set(keys))
  flat = {f"{s}.{k}" for s, v in config_lib.synthetic().to_dict().items()
          if isinstance(v, dict) for k in v} | {"model_dir"}
  assert set(keys) == flat
  for spec in specs:
    assert spec.doc, f"{spec.key} has no description in its docstring"
  config = config_lib.resolve_config("synthetic", {
      "latent.t_test": 7, "latent.method": "direct",
      "latent.clip_norm": None, "train.weight_decay": 1,
      "data.skip_bad_files": True, "model.tiny_width": 32,
      "model.weights": None, "model_dir": "/tmp/run"})
  assert config.latent.t_test == 7 and config.latent.method == "direct"
  assert config.latent.clip_norm is None
  assert config.train.weight_decay == 1.0
  assert isinstance(config.train.weight_decay, float)
  assert config.data.skip_bad_files and config.model.tiny_width == 32
  assert config.model_dir == "/tmp/run"


@pytest.mark.parametrize("overrides,match", [
    ({"latent.t_tset": 1},
     r"Unknown config key 'latent.t_tset'.*latent.t_test"),
    ({"latnet.t_test": 1}, r"Unknown config key 'latnet.t_test'"),
    ({"train.batch_size": "8"}, r"train.batch_size='8': expected an integer"),
    ({"train.batch_size": 2.5}, r"expected an integer"),
    ({"train.batch_size": True}, r"expected an integer"),
    ({"data.deterministic": 1}, r"data.deterministic=1: expected a boolean"),
    ({"latent.step_size": "big"}, r"expected a number"),
    ({"train.seed": None}, r"train.seed=None: this field cannot be None"),
    ({"model.backbone": "vgg"}, r"model.backbone='vgg': expected one of"),
])
def test_unknown_key_and_bad_type_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    config_lib.resolve_config("synthetic", overrides)


def test_choices_are_those_the_code_accepts():
  assert config_lib.BACKBONES == backbones.BACKBONES
  assert config_lib.LATENT_METHODS == latent_lib.METHODS


def test_model_defaults_agree_with_the_config():
  """A DISModel built without arguments behaves as the default config."""
  model = dis_model.DISModel(backbones.build_backbone("tiny", tiny_width=8))
  defaults = dis_model.runtime_settings(config_lib.ExperimentConfig())
  for name, value in defaults.items():
    assert getattr(model, name) == value, name
  assert model.t_train == config_lib.LatentConfig().t_train == 10


def test_save_load_round_trip(tmp_path):
  config = config_lib.resolve_config("voc12", {"latent.t_test": 3})
  config.save(str(tmp_path))
  loaded = config_lib.ExperimentConfig.load(str(tmp_path))
  assert loaded == config


def test_old_config_json_with_output_stride_under_data_loads(tmp_path):
  """output_stride moved from the data to the model section."""
  old = config_lib.synthetic().to_dict()
  stride = old["model"].pop("output_stride")
  old["data"]["output_stride"] = stride
  (tmp_path / config_lib.CONFIG_FILENAME).write_text(json.dumps(old))
  loaded = config_lib.ExperimentConfig.load(str(tmp_path))
  assert loaded.model.output_stride == 8
  assert loaded == config_lib.synthetic()
  with pytest.raises(ValueError, match="Unknown keys"):
    config_lib.ExperimentConfig.from_dict({"data": {"stride": 8}})


def _cpuinfo(tmp_path, flags):
  path = tmp_path / "cpuinfo"
  path.write_text("processor\t: 0\nmodel name\t: test\n"
                  f"flags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\n")
  return str(path)


@pytest.mark.parametrize("flags, expected", [
    ("avx512f avx512_bf16", "mixed_bfloat16"),
    ("amx_tile amx_bf16", "mixed_bfloat16"),
    ("avx512f avx512_vnni", "float32"),  # No bf16 units: oneDNN emulates.
])
def test_host_precision_reads_the_bf16_flags(tmp_path, flags, expected):
  assert config_lib.host_precision(_cpuinfo(tmp_path, flags)) == expected


def test_host_precision_without_cpuinfo_is_float32(tmp_path):
  assert config_lib.host_precision(str(tmp_path / "missing")) == "float32"


def test_auto_precision_is_resolved_never_stored(monkeypatch):
  monkeypatch.setattr(config_lib, "host_precision", lambda: "mixed_bfloat16")
  config = config_lib.resolve_config("synthetic",
                                     {"model.precision": "auto"})
  assert config.model.precision == "mixed_bfloat16"
  assert config_lib.ModelConfig(precision="auto").precision == (
      "mixed_bfloat16")
  monkeypatch.setattr(config_lib, "host_precision", lambda: "float32")
  assert config_lib.ModelConfig(precision="auto").precision == "float32"
  assert config.to_dict()["model"]["precision"] == "mixed_bfloat16"
  with pytest.raises(errors.UserError, match="'auto'"):
    config_lib.check_precision("bfloat16")
