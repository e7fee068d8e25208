"""dis_tf.research.pseudo_label_study and tools/pseudo_label_study.py."""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from dis_tf import config as config_lib
from dis_tf import metrics as dis_metrics
from dis_tf import model_dir as model_dir_lib
from dis_tf.research import pseudo_label_study
from dis_tf import tag_cleaning
from dis_tf.data import pipeline
from dis_tf.data import web_tags
from dis_tf.modeling.dis_model import build_dis_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_counts_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 4, (2, 9, 7))
  truth[0, :2] = 255
  labels = rng.integers(0, 4, truth.shape)
  start = np.where(rng.random(truth.shape) < 0.5, labels,
                   rng.integers(0, 4, truth.shape))
  counts = pseudo_label_study._Counts(dis_metrics.ConfusionMatrix(4))
  for i in range(2):
    counts.update(truth[i], labels[i], start[i])
  got = counts.scores()

  valid = truth != 255
  t, p, s = truth[valid], labels[valid], start[valid]
  ious = []
  for c in range(4):
    union = np.sum((t == c) | (p == c))
    if union:
      ious.append(np.sum((t == c) & (p == c)) / union)
  moved = p != s
  expected = {
      "miou": np.mean(ious),
      "fg_precision": np.sum((t > 0) & (p > 0)) / np.sum(p > 0),
      "fg_recall": np.sum((t > 0) & (p > 0)) / np.sum(t > 0),
      "changed": np.mean(moved),
      "fixed": np.mean(moved & (p == t)),
      "broke": np.mean(moved & (s == t)),
  }
  assert got.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-12, err_msg=key)
  # A step that changes nothing changes, fixes and breaks nothing.
  still = pseudo_label_study._Counts(dis_metrics.ConfusionMatrix(4))
  still.update(truth[1], labels[1], labels[1])
  assert still.scores()["changed"] == 0.0 == still.scores()["broke"]


def _tiny_run(model_dir, tiny_config, mini_benchmark, seed, **latent):
  config = tiny_config(model_dir, **latent)
  config_lib.apply_overrides(config, {
      "data.voc_dir": mini_benchmark["voc_dir"],
      "data.weak_dir": mini_benchmark["weak_dir"],
      "data.data_dir": mini_benchmark["data_dir"]})
  keras.utils.set_random_seed(seed)
  model = build_dis_model(config)
  config.save(config.model_dir)
  model_dir_lib.save_model(model, config.model_dir)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_config, mini_benchmark):
  """Two ablation workdirs of seed 0 sharing one stage-1 model (copied, as
  the train_update comparison run did); their DIS models differ in
  train_update."""
  root = tmp_path_factory.mktemp("study")
  paper, per_pixel = str(root / "paper"), str(root / "per_pixel")
  _tiny_run(os.path.join(paper, "seed_0", "stage1"), tiny_config,
            mini_benchmark, seed=0)
  _tiny_run(os.path.join(paper, "seed_0", "t_train_2"), tiny_config,
            mini_benchmark, seed=1, train_update="both")
  copy = os.path.join(per_pixel, "seed_0", "stage1")
  shutil.copytree(os.path.join(paper, "seed_0", "stage1"), copy)
  # A resumed run rewrites model.keras from the same weights; the file's
  # save date (whole seconds) makes its bytes differ.
  time.sleep(1.1)
  model_dir_lib.save_model(model_dir_lib.load_trained_model(copy), copy)
  original = os.path.join(paper, "seed_0", "stage1")
  assert not filecmp.cmp(model_dir_lib.model_path(copy),
                         model_dir_lib.model_path(original), shallow=False)
  _tiny_run(os.path.join(per_pixel, "seed_0", "t_train_2"), tiny_config,
            mini_benchmark, seed=2, train_update="per_pixel")
  return paper, per_pixel


def test_scores_equal_tag_cleaning_of_the_same_model(two_runs, tmp_path,
                                                     mini_benchmark):
  """The "both" and "t=0" scores are what tag cleaning (the weak-image
  inference stage 2 uses) gives at t_train and at 0 steps."""
  paper, _ = two_runs
  model_dir = os.path.join(paper, "seed_0", "t_train_2")
  scores = pseudo_label_study.score_model(model_dir, t_train=2, limit=3)
  assert scores["num_images"] == 3
  assert scores["t=0"]["changed"] == 0.0
  config, model = model_dir_lib.load(model_dir)
  truth = web_tags.load_weak_truth(mini_benchmark["weak_dir"])
  for step, t in (("both", 2), ("t=0", 0)):
    report = tag_cleaning.clean_tags(
        model, pipeline.weak_eval_dataset(config), str(tmp_path / step), t,
        truth=truth, limit=3, log_every=0)
    np.testing.assert_allclose(scores[step]["miou"],
                               report["labelmap"]["mean_iou"], atol=1e-9)


def test_tool_writes_the_page_and_rerenders_it(two_runs, tmp_path, tool_env):
  paper, per_pixel = two_runs
  output = str(tmp_path / "out" / "PSEUDO_LABELS.md")
  env = tool_env()
  proc = subprocess.run(
      [sys.executable, "tools/pseudo_label_study.py",
       f"--workdirs={paper},{per_pixel}", "--t_train=2", "--weak_limit=2",
       f"--output={output}"],
      check=True, cwd=REPO, env=env, capture_output=True, text=True,
      timeout=600)
  # The copied stage-1 model (same weights, rewritten file) is scored once.
  assert proc.stdout.count("] stage 1 of ") == 1
  page = open(output).read()
  saved = json.load(open(output[:-3] + ".json"))
  assert saved["seeds"] == [0]
  assert saved["runs"] == {"train_update=both": paper,
                           "train_update=per_pixel": per_pixel}
  result = saved["results"][0]
  # ... and shown as one row.
  assert (result["stage 1"]["train_update=both"]
          == result["stage 1"]["train_update=per_pixel"])
  assert "| stage 1 | " in page and "stage 1 of" not in page
  for row in ("| DIS trained with train_update=both | ",
              "| DIS trained with train_update=per_pixel | ",
              "| stage 1 | per_pixel | "):
    assert row in page
  # Each run's drift is taken under its own step.
  drift = ("* Stage 2 of train_update=per_pixel, pseudo labels under its "
           "own step, final model minus stage-1 model: ")
  assert drift in page
  diff = 100 * (result["DIS"]["train_update=per_pixel"]["per_pixel"]["miou"]
                - result["stage 1"]["train_update=per_pixel"]["per_pixel"][
                    "miou"])
  assert f"{drift}{diff:+.1f} (one seed, no interval;" in page
  assert "## Reading" in page
  assert ("* *Stage 2 with train_update=per_pixel*: what its own step adds "
          "to its final model's prediction (t=0): ") in page
  again = str(tmp_path / "again.md")
  subprocess.run(
      [sys.executable, "tools/pseudo_label_study.py",
       f"--from_json={output[:-3]}.json", f"--output={again}"],
      check=True, cwd=REPO, env=env, capture_output=True, timeout=600)
  assert open(again).read() == page



def test_tool_names_a_workdir_without_seeds(tmp_path, run_tool):
  proc = run_tool("tools/pseudo_label_study.py",
                  f"--workdirs={tmp_path}", f"--output={tmp_path}/p.md",
                  check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: --workdirs: {tmp_path} has no seed_<n> folder of a "
      "tools/ablation.py run.")
