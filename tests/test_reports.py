"""dis_tf.reports: the Table-3 layout, the summary, the JSON report."""

import csv
import io
import json

import numpy as np
import pytest

from dis_tf import classes
from dis_tf import evaluation
from dis_tf import reports


@pytest.fixture(scope="module")
def model(tiny_model):
  return tiny_model()


def test_table3_layout_and_reports(model, eval_examples, tmp_path):
  results = evaluation.evaluate_model(model, eval_examples(), [0, 2, 5],
                                      flip=True)
  markdown, csv_text = reports.format_table3(results, classes.VOC_CLASSES)
  lines = markdown.strip().splitlines()
  assert len(lines) == 2 + 3  # Header, rule, one row per setting.
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert header[0] == "setting" and header[-1] == "mIoU"
  assert header[1:3] == ["bg", "areo"] and len(header) == 1 + 21 + 1
  assert "t_ts=5 +flip" in lines[-1]
  rows = list(csv.reader(io.StringIO(csv_text)))
  assert len(rows) == 4 and rows[0][-1] == "mIoU"
  for row, setting in zip(rows[1:], results["settings"]):
    assert float(row[-1]) == pytest.approx(100 * setting["mean_iou"], abs=0.06)
    assert len(row) == 23
  md_no_bg, _ = reports.format_table3(results, classes.VOC_CLASSES,
                                         include_background=False)
  assert "| bg |" not in md_no_bg.splitlines()[0]
  # Several results (e.g. an ablation) stack into one table.
  stacked, _ = reports.format_table3([results, results])
  assert len(stacked.strip().splitlines()) == 2 + 6

  paths = reports.write_reports(results, str(tmp_path), extra={"x": 1})
  data = json.load(open(paths["json"]))
  assert data["x"] == 1 and len(data["settings"]) == 3
  assert np.array(data["settings"][0]["confusion_matrix"]).shape == (21, 21)
  assert open(paths["table3_md"]).read() == markdown


