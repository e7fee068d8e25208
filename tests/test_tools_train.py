"""tools/train.py from the command line, as a user runs it (subprocesses)."""

import json
import os
import shutil

import numpy as np
import pytest

from dis_tf import model_dir as model_dir_lib


@pytest.fixture(scope="session")
def train(run_tool):
  return lambda *flags, check=True: run_tool("tools/train.py", *flags,
                                             check=check)


def test_synthetic_preset_all_stages(trained_run, tmp_path, train):
  # The session's trained run: tools/train.py --preset=synthetic
  # --stage=all --crop_size=48 --t_train=2 --tag_weight=0.5 ...
  model_dir = trained_run["model_dir"]
  config = json.load(open(os.path.join(model_dir, "config.json")))
  assert config["data"]["crop_size"] == 48
  assert config["loss"]["tag_weight"] == 0.5
  assert config["latent"]["t_train"] == 2
  _, model = model_dir_lib.load(model_dir)
  assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
  # A second run finds every phase finished and only rewrites model.keras
  # (in a copy: the session's run stays as it is).
  copy = str(tmp_path / "run")
  shutil.copytree(model_dir, copy)
  again = train(f"--model_dir={copy}", *trained_run["flags"])
  assert "== phase" not in again.stdout


def test_bad_flags_are_named(mini_benchmark, tmp_path, train):
  result = train("--preset=synthetic", f"--model_dir={tmp_path}/x",
                 "--strategy=tpu", check=False)
  assert result.returncode != 0 and "strategy" in result.stderr
  result = train("--preset=synthetic", f"--model_dir={tmp_path}/y",
                 "--stage=semi", *mini_benchmark["flags"], check=False)
  assert result.returncode != 0 and "phase_c" in result.stderr


def test_helpfull_documents_every_flag(train):
  result = train("--helpfull", check=False)  # absl exits 1 after help.
  for flag in ("--preset", "--stage", "--t_train", "--latent.step_size",
               "--backbone", "--weights", "--strategy", "--seed",
               "--phase_a_lr", "--image_weight", "--weak_dir"):
    assert flag in result.stdout


@pytest.mark.slow
def test_voc12_preset_runs_a_couple_of_steps_with_resnet101(mini_benchmark,
                                                           tmp_path, train):
  # The paper's preset on a VOC-layout tree: real dilated ResNet101 (no
  # ImageNet download here: --weights=none), SGD + poly, one step per phase
  # at a reduced crop to keep CPU time bounded.
  model_dir = str(tmp_path / "voc12")
  train("--preset=voc12", f"--model_dir={model_dir}", "--stage=all",
        *mini_benchmark["flags"], "--weights=none", "--crop_size=97",
        "--batch_size=2", "--phase_a_steps=1", "--phase_b_steps=1",
        "--phase_c_steps=1", "--semi_steps=1", "--steps_per_epoch=1",
        "--t_train=1", "--use_voc_weak_tags")
  config = json.load(open(os.path.join(model_dir, "config.json")))
  assert config["model"]["backbone"] == "resnet101"
  assert config["train"]["optimizer"] == "sgd"
  assert config["model"]["weights"] is None
  assert os.path.exists(os.path.join(model_dir, "model.keras"))
