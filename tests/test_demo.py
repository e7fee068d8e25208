"""The README's main command, `python tools/demo.py`, end to end in its
`--quick` setting (the same six steps on a small benchmark)."""

import json
import re

import numpy as np
from PIL import Image
import pytest

from dis_tf import config as config_lib
from dis_tf import selection


@pytest.mark.slow
def test_quick_demo_writes_every_output_and_serves_its_choice(tmp_path,
                                                              run_tool):
  workdir, data_root = tmp_path / "run", tmp_path / "data"
  proc = run_tool("tools/demo.py", "--quick", f"--workdir={workdir}",
                  f"--data_root={data_root}")
  out = proc.stdout
  lines = out.splitlines()
  # Quiet: the six steps and their results, no TensorFlow start-up logs.
  assert len(lines) < 80, out
  assert [line for line in lines if line.startswith("=== ")] == [
      f"=== 1/6 synthetic benchmark in {data_root} ===",
      "=== 2/6 preparing the tfds datasets ===",
      f"=== 3/6 training stage 1 (a, b, c) and stage 2 into {workdir}/model "
      f"({config_lib.host_precision()}) ===",
      "=== 4/6 choosing the served setting on val[:20], evaluating on "
      "val[20:] ===",
      "=== 5/6 figures ===",
      "=== 6/6 SavedModel export and one served prediction ==="], out

  model_dir = workdir / "model"
  for path in ["config.json", "model.keras", "eval_val/table3.md",
               "eval_val/table3.csv", "eval_val/results.json",
               "figures/val.png", selection.SELECTION_FILENAME]:
    assert (model_dir / path).is_file(), path
  assert (workdir / "export" / "1" / "saved_model.pb").is_file()

  # The printed choice is the one stored, and the one the export serves.
  served = re.search(r"^Served: t_test = (\d+), refinement (\S+); latent "
                     r"update (\w+)", out, re.M)
  assert served, out
  record = json.loads((model_dir / selection.SELECTION_FILENAME).read_text())
  assert record["split"] == "val[:20]" and record["num_images"] == 20
  assert (str(record["t_test"]), str(record["refinement"]),
          record["update"]) == served.groups()
  config = json.loads((model_dir / "config.json").read_text())
  # --precision=auto (the default) is resolved, never stored: bf16 where
  # this CPU has bf16 units.
  assert config["model"]["precision"] == config_lib.host_precision()
  assert config["latent"]["t_test"] == record["t_test"]
  assert config["latent"]["update"] == record["update"]
  # The quick demo's t_test candidates, each scored at every refinement
  # and update.
  assert len(record["scores"]) == (len(selection.REFINEMENTS)
                                   * len(selection.UPDATES))
  assert all(set(row) == {"0", "2"} for row in record["scores"].values())
  results = json.loads((model_dir / "eval_val" / "results.json").read_text())
  assert results["num_images"] == 20  # val[20:] of 40 images.

  # The export's mIoU on the JPEG files equals the evaluation's.
  scores = re.search(r"scored against their mask PNGs: ([\d.]+) mIoU "
                     r"\(evaluation: ([\d.]+)\)", out)
  assert scores, out
  assert abs(float(scores.group(1)) - float(scores.group(2))) <= 0.15, out
  labelmap = np.array(Image.open(workdir / "served_labelmap.png"))
  assert labelmap.ndim == 2 and labelmap.max() <= 20
