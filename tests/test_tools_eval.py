"""Smoke tests of tools/evaluate.py, clean_tags.py and visualize.py.

Each tool runs in a subprocess (absl flags are process-global) on the mini
synthetic benchmark and an untrained tiny model saved as a model_dir.
"""

import csv
import json
import os

import numpy as np
from PIL import Image
import pytest

from dis_tf import config as config_lib
from dis_tf import evaluation


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mini_benchmark, tiny_run):
  root = tmp_path_factory.mktemp("tools_eval")
  model_dir = str(root / "run")
  config, _ = tiny_run(model_dir, width=16)
  config.data.voc_dir = mini_benchmark["voc_dir"]
  config.data.weak_dir = mini_benchmark["weak_dir"]
  # A data_dir elsewhere than config.json's, to exercise --data_dir.
  config.data.data_dir = str(root / "unused")
  config.data.deterministic = True
  config.save(model_dir)
  return {"model_dir": model_dir, "data_dir": mini_benchmark["data_dir"],
          "weak_dir": mini_benchmark["weak_dir"], "root": root,
          "num_val": mini_benchmark["num_val"]}


@pytest.mark.parametrize("tool", ["tools/evaluate.py", "tools/clean_tags.py",
                                  "tools/visualize.py", "tools/predict.py",
                                  "export/client.py"])
def test_helpfull_documents_every_flag(tool, run_tool):
  flags_by_tool = {
      "predict.py": ["model_dir", "saved_model", "images", "output_dir",
                     "t_test", "batch_size", "on_error"],
      "client.py": ["images", "server", "protocol", "steps", "output_dir",
                    "timeout", "max_response_bytes", "insecure", "ca_file",
                    "ssl_root_certs", "ssl_client_cert", "ssl_client_key"],
      "evaluate.py": ["model_dir", "data_dir", "voc_dir", "split", "t_test",
                      "flip", "scales", "tag_threshold", "limit",
                      "output_dir", "select_t_test", "select_split"],
      "clean_tags.py": ["model_dir", "weak_dir", "data_dir", "output_dir",
                        "t_train", "tag_threshold", "limit", "use_truth"],
      "visualize.py": ["model_dir", "data_dir", "voc_dir", "split",
                       "num_images", "file_names", "t_test", "output",
                       "title"],
  }
  proc = run_tool(tool, "--helpfull", check=False)
  text = proc.stdout + proc.stderr
  section = text[text.index(f"{tool}:"):]
  for name in flags_by_tool[os.path.basename(tool)]:
    assert f"--{name}:" in section or f"--[no]{name}:" in section, name


def test_evaluate_cli(run_dir, run_tool, tensorboard_events):
  out = str(run_dir["root"] / "eval")
  proc = run_tool("tools/evaluate.py", f"--model_dir={run_dir['model_dir']}",
                  f"--data_dir={run_dir['data_dir']}", "--split=val",
                  "--t_test=0,2", "--flip", "--scales=0.75,1",
                  f"--output_dir={out}")
  assert "| setting |" in proc.stdout
  results = json.load(open(os.path.join(out, "results.json")))
  assert results["num_images"] == run_dir["num_val"]
  assert results["split"] == "val"
  assert [s["t_test"] for s in results["settings"]] == [0, 2]
  for setting in results["settings"]:
    matrix = np.array(setting["confusion_matrix"])
    assert matrix.shape == (21, 21) and matrix.sum() > 0
    assert set(setting["tags"]) == {"precision", "recall", "f1", "map"}
  rows = list(csv.reader(open(os.path.join(out, "table3.csv"))))
  assert len(rows) == 3 and rows[0][-1] == "mIoU"
  assert os.path.exists(os.path.join(out, "table3.md"))
  # TensorBoard: the scores of each t_test as scalars, step = t_test, in
  # the run of this split and test variant.
  logs = os.path.join(run_dir["model_dir"], "logs", "eval",
                      "val_flip_ms0.75_1")
  assert f"tensorboard: {logs}" in proc.stdout
  events = tensorboard_events(logs)
  for tag, key in (("eval/miou", "mean_iou"),
                   ("eval/pixel_accuracy", "pixel_accuracy")):
    assert [e["step"] for e in events[tag]] == [0, 2]
    np.testing.assert_allclose([float(e["value"]) for e in events[tag]],
                               [s[key] for s in results["settings"]],
                               rtol=1e-6)


def test_evaluate_cli_selects_t_test_on_a_held_out_split(run_dir, run_tool):
  out = str(run_dir["root"] / "eval_select")
  proc = run_tool("tools/evaluate.py", f"--model_dir={run_dir['model_dir']}",
                  f"--data_dir={run_dir['data_dir']}", "--t_test=0,2",
                  "--select_t_test", "--select_split=val[:2]",
                  "--split=val[2:]", f"--output_dir={out}")
  record = json.load(open(os.path.join(run_dir["model_dir"],
                                       "t_test_selection.json")))
  assert record["split"] == "val[:2]" and record["num_images"] == 2
  # Every candidate scored: t 0 and 2 under each final prediction and
  # latent update.
  assert set(record["scores"]) == {
      f"{r}, {u}" for r in ("off", "paper", "bias=2", "bias=4")
      for u in ("u1", "both", "per_pixel")}
  assert all(set(row) == {"0", "2"} for row in record["scores"].values())
  # Two images cannot clear the bootstrap margin unless every resample
  # agrees; whatever was chosen is what config.json stores.
  saved = config_lib.ExperimentConfig.load(run_dir["model_dir"])
  assert saved.latent.t_test == record["t_test"]
  assert evaluation.refinement_name(
      saved.latent.tag_refinement) == record["refinement"]
  # The stored config keeps its own data_dir (the flag is not baked in).
  assert saved.data.data_dir == str(run_dir["root"] / "unused")
  assert saved.latent.update == record["update"]
  assert (f"Served: t_test = {record['t_test']}, refinement "
          f"{record['refinement']}; latent update {record['update']}") in (
              proc.stdout)
  results = json.load(open(os.path.join(out, "results.json")))
  assert results["num_images"] == run_dir["num_val"] - 2
  proc = run_tool("tools/evaluate.py", f"--model_dir={run_dir['model_dir']}",
                  f"--data_dir={run_dir['data_dir']}", "--t_test=0,2",
                  "--select_t_test", "--select_split=val[:3]",
                  "--split=val[2:]", check=False)
  # Overlapping slices, not only equal split strings, are refused.
  assert proc.returncode != 0 and "held out" in proc.stderr
  assert "shares 1 images" in proc.stderr


def test_evaluate_cli_names_bad_flag_values(run_dir, run_tool):
  proc = run_tool("tools/evaluate.py", f"--model_dir={run_dir['model_dir']}",
                  "--t_test=0,abc", check=False)
  assert proc.returncode != 0 and "--t_test" in proc.stderr
  proc = run_tool("tools/evaluate.py",
                  f"--model_dir={run_dir['root'] / 'nope'}", check=False)
  assert proc.returncode != 0 and "--model_dir" in proc.stderr


def test_clean_tags_cli(run_dir, run_tool):
  out = str(run_dir["root"] / "clean")
  proc = run_tool("tools/clean_tags.py",
                  f"--model_dir={run_dir['model_dir']}",
                  f"--data_dir={run_dir['data_dir']}",
                  f"--weak_dir={run_dir['weak_dir']}", "--t_train=2",
                  "--limit=3", f"--output_dir={out}")
  assert "given (noisy)" in proc.stdout
  report = json.load(open(os.path.join(out, "report.json")))
  assert report["num_images"] == 3 and report["num_matched"] == 3
  for key in ("before", "after"):
    assert set(report[key]) == {"precision", "recall", "f1"}
  lines = [json.loads(line) for line in open(os.path.join(out,
                                                    "cleaned_tags.jsonl"))]
  assert len(lines) == 3
  for line in lines:
    assert {"file_name", "given_tags", "cleaned_tags",
            "tag_probabilities", "labelmap"} <= set(line)
    png = Image.open(os.path.join(out, line["labelmap"]))
    assert png.mode == "P"
    assert np.array(png).max() < 21


def test_visualize_cli(run_dir, run_tool):
  output = str(run_dir["root"] / "fig" / "grid.png")
  run_tool("tools/visualize.py", f"--model_dir={run_dir['model_dir']}",
           f"--data_dir={run_dir['data_dir']}", "--num_images=2",
           "--t_test=2", f"--output={output}")
  assert Image.open(output).format == "PNG"
