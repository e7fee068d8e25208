"""tools/train.py from the command line, as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dis_tf import model_dir as model_dir_lib
from dis_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*flags, check=True):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "tools/train.py", *flags],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=900, check=check)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.generate_benchmark(root, num_train=6, num_val=3, num_weak=6,
                               num_tags_only=2, image_size=64)
  return root


def _data_flags(tree, tmp_path):
  return [f"--voc_dir={tree}", f"--weak_dir={tree}/web_tags",
          f"--data_dir={tmp_path}/tfds"]


def test_synthetic_preset_all_stages(tree, tmp_path):
  model_dir = str(tmp_path / "run")
  _train("--preset=synthetic", f"--model_dir={model_dir}", "--stage=all",
         *_data_flags(tree, tmp_path), "--crop_size=48", "--batch_size=2",
         "--phase_a_steps=2", "--phase_b_steps=2", "--phase_c_steps=2",
         "--semi_steps=2", "--steps_per_epoch=2", "--t_train=2",
         "--tag_weight=0.5")
  config = json.load(open(os.path.join(model_dir, "config.json")))
  assert config["data"]["crop_size"] == 48
  assert config["loss"]["tag_weight"] == 0.5
  assert config["latent"]["t_train"] == 2
  _, model = model_dir_lib.load(model_dir)
  assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
  # A second run finds every phase finished and only rewrites model.keras.
  again = _train("--preset=synthetic", f"--model_dir={model_dir}",
                 "--stage=all", *_data_flags(tree, tmp_path),
                 "--crop_size=48", "--batch_size=2")
  assert "== phase" not in again.stdout


def test_bad_flags_are_named(tree, tmp_path):
  result = _train("--preset=synthetic", f"--model_dir={tmp_path}/x",
                  "--strategy=tpu", check=False)
  assert result.returncode != 0 and "strategy" in result.stderr
  result = _train("--preset=synthetic", f"--model_dir={tmp_path}/y",
                  "--stage=semi", *_data_flags(tree, tmp_path), check=False)
  assert result.returncode != 0 and "phase_c" in result.stderr


def test_helpfull_documents_every_flag():
  result = _train("--helpfull", check=False)  # absl exits 1 after help.
  for flag in ("--preset", "--stage", "--t_train", "--latent_step",
               "--backbone", "--weights", "--strategy", "--seed",
               "--phase_a_lr", "--image_weight", "--weak_dir"):
    assert flag in result.stdout


@pytest.mark.slow
def test_voc12_preset_runs_a_couple_of_steps_with_resnet101(tree, tmp_path):
  # The paper's preset on a VOC-layout tree: real dilated ResNet101 (no
  # ImageNet download here: --weights=none), SGD + poly, one step per phase
  # at a reduced crop to keep CPU time bounded.
  model_dir = str(tmp_path / "voc12")
  _train("--preset=voc12", f"--model_dir={model_dir}", "--stage=all",
         *_data_flags(tree, tmp_path), "--weights=none", "--crop_size=97",
         "--batch_size=2", "--phase_a_steps=1", "--phase_b_steps=1",
         "--phase_c_steps=1", "--semi_steps=1", "--steps_per_epoch=1",
         "--t_train=1", "--use_voc_weak_tags")
  config = json.load(open(os.path.join(model_dir, "config.json")))
  assert config["model"]["backbone"] == "resnet101"
  assert config["train"]["optimizer"] == "sgd"
  assert config["model"]["weights"] is None
  assert os.path.exists(os.path.join(model_dir, "model.keras"))
