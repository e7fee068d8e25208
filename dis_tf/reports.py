"""Evaluation reports: the paper's Table 3, a summary table, JSON.

`dis_tf.evaluation.evaluate_model` returns a dict of scores; these functions
format it (Markdown, CSV) and write it (`write_reports`: table3.md,
table3.csv, summary.md, results.json, each atomically).
"""

import csv
import io
import json
import os

import numpy as np

from dis_tf import atomic
from dis_tf import classes

# The paper's Table 3 column headers for the VOC classes.
PAPER_SHORT_NAMES = {
    "background": "bg", "aeroplane": "areo", "bicycle": "bike",
    "bird": "bird", "boat": "boat", "bottle": "bottle", "bus": "bus",
    "car": "car", "cat": "cat", "chair": "chair", "cow": "cow",
    "diningtable": "table", "dog": "dog", "horse": "horse",
    "motorbike": "mbike", "person": "person", "pottedplant": "plant",
    "sheep": "sheep", "sofa": "sofa", "train": "train", "tvmonitor": "tv",
}


def _settings_of(results):
  """Rows from one results dict, a list of them, or a list of settings."""
  if isinstance(results, dict):
    results = [results]
  rows = []
  for item in results:
    if "settings" in item:
      rows.extend(item["settings"])
    else:
      rows.append(item)
  return rows


def short_name(class_name):
  """The paper's Table-3 column header of a VOC class (else the name)."""
  return PAPER_SHORT_NAMES.get(class_name, class_name)


def format_table3(results, class_names=classes.VOC_CLASSES,
                  include_background=True, percent=True, digits=1):
  """Per-class IoU in the layout of the paper's Table 3.

  One row per setting, one column per class (the paper's abbreviations for
  VOC), mIoU last. The paper's table omits background; here it is the first
  column unless `include_background=False`, so the row's mIoU is the mean of
  its shown columns (mIoU always includes every class, as in VOC).

  Args:
    results: an `evaluate_model` dict, a list of them, or a list of setting
      dicts (each with "name", "per_class_iou", "mean_iou").
    class_names: class names, index = class id.
    include_background: show the class-0 column.
    percent: scale IoUs to percent, as the paper does.
    digits: decimals.

  Returns:
    (markdown, csv) strings. Classes absent from a split print "-" in
    Markdown and an empty CSV cell.
  """
  rows = _settings_of(results)
  first = 0 if include_background else 1
  headers = (["setting"] + [short_name(n) for n in class_names[first:]]
             + ["mIoU"])
  factor = 100.0 if percent else 1.0

  def cell(value, empty):
    if value is None or not np.isfinite(value):
      return empty
    return f"{factor * value:.{digits}f}"

  md_lines = ["| " + " | ".join(headers) + " |",
              "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
  csv_buffer = io.StringIO()
  writer = csv.writer(csv_buffer, lineterminator="\n")
  writer.writerow(headers)
  for row in rows:
    ious = list(row["per_class_iou"])[first:len(class_names)]
    md_cells = [row["name"]] + [cell(v, "-") for v in ious] + [
        cell(row["mean_iou"], "-")]
    csv_cells = [row["name"]] + [cell(v, "") for v in ious] + [
        cell(row["mean_iou"], "")]
    md_lines.append("| " + " | ".join(md_cells) + " |")
    writer.writerow(csv_cells)
  return "\n".join(md_lines) + "\n", csv_buffer.getvalue()


def format_summary(results, percent=True):
  """Markdown table: pixel accuracy, mIoU and tag P / R / F1 / mAP per row.

  Args:
    results: as for `format_table3`.
    percent: scale to percent.

  Returns:
    Markdown string.
  """
  factor = 100.0 if percent else 1.0
  lines = ["| setting | pixel acc | mIoU | tag P | tag R | tag F1 | tag mAP |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for row in _settings_of(results):
    tags = row.get("tags") or {}

    def fmt(value):
      return "-" if value is None else f"{factor * value:.1f}"

    lines.append("| " + " | ".join([
        row["name"], fmt(row.get("pixel_accuracy")), fmt(row.get("mean_iou")),
        fmt(tags.get("precision")), fmt(tags.get("recall")),
        fmt(tags.get("f1")), fmt(tags.get("map"))]) + " |")
  return "\n".join(lines) + "\n"


def to_jsonable(value):
  """Nested dicts / lists / arrays as plain JSON values (NaN, Inf -> None)."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if np.isfinite(value) else None  # JSON has no NaN.
  return value


def results_to_json(results, class_names=classes.VOC_CLASSES, extra=None):
  """A JSON-serialisable copy of `evaluate_model` results (NaN -> null).

  Args:
    results: an `evaluate_model` dict.
    class_names: stored alongside, and used to name per-class IoUs.
    extra: optional dict merged in (e.g. model_dir, split).

  Returns:
    A dict of plain Python values.
  """
  out = to_jsonable(results)
  out["class_names"] = list(class_names)
  for row in out["settings"]:
    row["per_class_iou_by_name"] = dict(zip(class_names, row["per_class_iou"]))
  if extra:
    out.update(to_jsonable(extra))
  return out


def write_reports(results, output_dir, class_names=classes.VOC_CLASSES,
                  extra=None):
  """Writes table3.md, table3.csv, summary.md and results.json.

  Args:
    results: an `evaluate_model` dict.
    output_dir: created if missing.
    class_names: class names.
    extra: merged into the JSON.

  Returns:
    Dict name -> path written.
  """
  os.makedirs(output_dir, exist_ok=True)
  markdown, csv_text = format_table3(results, class_names)
  summary = format_summary(results)
  paths = {
      "table3_md": os.path.join(output_dir, "table3.md"),
      "table3_csv": os.path.join(output_dir, "table3.csv"),
      "summary_md": os.path.join(output_dir, "summary.md"),
      "json": os.path.join(output_dir, "results.json"),
  }
  atomic.write_text(paths["table3_md"], markdown)
  atomic.write_text(paths["table3_csv"], csv_text)
  atomic.write_text(paths["summary_md"], summary)
  atomic.write_text(paths["json"], json.dumps(
      results_to_json(results, class_names, extra), indent=2) + "\n")
  return paths
