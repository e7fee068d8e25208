"""Predictions on image files: tools/predict.py, dis_tf.segmenter, the writer.

The session's `trained_run` is exported once (module fixture). The tool runs
on a folder of its val JPEGs (plus a same-stem PNG and two bad files) from
--model_dir and from --saved_model, and both must write identical files
whose class ids are those of the in-process serving computation; the served
client (`export/client.py`, transport replaced by the SavedModel) must write
the same files too.
"""

import csv
import io
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import dis_tf
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib
from dis_tf import prediction_io
from dis_tf import segmenter as segmenter_lib
from dis_tf.classes import voc_palette
from dis_tf.serving import export_lib
from dis_tf.serving import module as serving_module
from dis_tf.serving import client as client_lib

T_TEST = 3
NUM_VAL = 4  # conftest.MINI_BENCHMARK["num_val"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_run, mini_benchmark):
  """An export of `trained_run` and an input folder with known contents."""
  root = tmp_path_factory.mktemp("predict")
  model_dir = trained_run["model_dir"]
  saved_model = export_lib.export_from_model_dir(model_dir,
                                                 str(root / "export"))
  jpegs = os.path.join(mini_benchmark["voc_dir"], "VOCdevkit", "VOC2012",
                       "JPEGImages")
  images = root / "images"
  images.mkdir()
  names = [f"val_{i:06d}.jpg" for i in range(NUM_VAL)]
  for name in names:
    shutil.copy(os.path.join(jpegs, name), images / name)
  # Same stem as val_000000.jpg, other folder, other format and size.
  other = root / "other"
  other.mkdir()
  rgb = np.random.RandomState(0).randint(0, 256, (40, 70, 3), np.uint8)
  Image.fromarray(rgb).save(other / "val_000000.png")
  bad = root / "bad"
  bad.mkdir()
  (bad / "empty.jpg").write_bytes(b"")
  (bad / "notes.png").write_bytes(b"not an image at all")
  config, model = model_dir_lib.load(model_dir)
  module = serving_module.build_serving_module(
      model, config.latent.t_test, config.data.crop_size,
      latent_step_size=config.latent.step_size)
  inputs = [str(images / n) for n in names] + [str(other / "val_000000.png")]
  encoded = [open(p, "rb").read() for p in inputs]
  reference = serving_module.predict_in_process(
      model, encoded, T_TEST, config.data.crop_size, module=module)
  return {"root": root, "model_dir": model_dir, "saved_model": saved_model,
          "images": str(images), "other": str(other), "bad": str(bad),
          "inputs": inputs, "reference": reference, "config": config}


def _reference_ids(setup, index):
  ref = setup["reference"]
  return ref["class_ids"][index, :ref["height"][index], :ref["width"][index]]


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _run_predict(run_tool, setup, source_flag, out, *extra, check=True):
  images = ",".join([os.path.join(setup["images"], "*.jpg"),
                     os.path.join(setup["other"], "val_000000.png"),
                     setup["bad"]])
  return run_tool("tools/predict.py", source_flag, f"--images={images}",
                  f"--output_dir={out}", f"--t_test={T_TEST}",
                  "--batch_size=3", *extra, check=check)


@pytest.fixture(scope="module")
def tool_outputs(setup, run_tool):
  outs = {}
  for name, flag in (("model_dir", f"--model_dir={setup['model_dir']}"),
                     ("saved_model",
                      f"--saved_model={setup['saved_model']}")):
    out = str(setup["root"] / f"out_{name}")
    outs[name] = (out, _run_predict(run_tool, setup, flag, out))
  return outs


def test_tool_writes_palette_pngs_overlays_and_jsonl(setup, tool_outputs):
  out, proc = tool_outputs["model_dir"]
  records = _read_jsonl(os.path.join(out, "predictions.jsonl"))
  assert [r["file"] for r in records] == setup["inputs"]
  # The PNG with the stem of val_000000.jpg does not overwrite its outputs.
  assert [r["labelmap"] for r in records] == [
      f"val_{i:06d}_labelmap.png" for i in range(NUM_VAL)] + [
          "val_000000_2_labelmap.png"]
  names = setup["config"].model.num_classes
  for index, record in enumerate(records):
    with Image.open(record["file"]) as source:
      size = source.size
    with Image.open(os.path.join(out, record["labelmap"])) as labelmap:
      assert labelmap.mode == "P" and labelmap.size == size
      assert labelmap.getpalette()[:63] == voc_palette()[:21].ravel().tolist()
      ids = np.asarray(labelmap)
    np.testing.assert_array_equal(ids, _reference_ids(setup, index))
    with Image.open(os.path.join(out, record["overlay"])) as overlay:
      assert overlay.mode == "RGB" and overlay.size == size
    assert (record["height"], record["width"]) == (size[1], size[0])
    assert record["t_test"] == T_TEST
    probs = setup["reference"]["tag_probabilities"][index]
    assert list(record["tag_probabilities"]) == list(
        serving_module.class_names_for(names)[1:])
    np.testing.assert_allclose(list(record["tag_probabilities"].values()),
                               probs[1:], atol=1e-4)
    assert record["tags"] == [n for n, p in
                              record["tag_probabilities"].items() if p > 0.5]
  lines = proc.stdout.strip().splitlines()
  assert lines[-1].startswith("5 images written, 2 skipped; t_test=3")
  assert sum(line.startswith("skipped: ") for line in lines) == 2
  assert any("empty.jpg: empty file" in line for line in lines)
  assert any("notes.png: not a JPEG, PNG, GIF or BMP" in line
             for line in lines)
  # The progress bar (not a terminal: a line per tenth), after each batch.
  bar = [line for line in proc.stderr.splitlines() if line.startswith("[")]
  assert bar == ["[" + "#" * 13 + "." * 17 + "] 3/7 images, 0 skipped",
                 "[" + "#" * 26 + "." * 4 + "] 6/7 images, 1 skipped",
                 "[" + "#" * 30 + "] 7/7 images, 2 skipped"]


def test_model_dir_and_saved_model_write_identical_files(tool_outputs):
  out_md, _ = tool_outputs["model_dir"]
  out_sm, _ = tool_outputs["saved_model"]
  files = sorted(os.listdir(out_md))
  assert files == sorted(os.listdir(out_sm))
  assert len(files) == 2 * 5 + 1
  for name in files:
    with open(os.path.join(out_md, name), "rb") as a, \
        open(os.path.join(out_sm, name), "rb") as b:
      assert a.read() == b.read(), name


def test_on_error_stop_names_the_file(setup, run_tool, tmp_path):
  proc = _run_predict(run_tool, setup, f"--saved_model={setup['saved_model']}",
                      tmp_path / "out", "--on_error=stop", check=False)
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last == (f"error: {setup['bad']}/empty.jpg: empty file (0 bytes); "
                  "not an image.")


def test_client_writes_the_same_files(setup, tool_outputs, tmp_path,
                                      monkeypatch):
  loaded = tf.saved_model.load(setup["saved_model"])

  def fake_rest(server, model_name, image_bytes, steps=None, version=None,
                connection=None):
    del server, model_name, version, connection
    out = loaded.signatures["serving_steps"](
        image_bytes=tf.constant(image_bytes),
        steps=tf.constant([steps] * len(image_bytes), tf.int32))
    return {k: v.numpy() for k, v in out.items()}

  monkeypatch.setattr(client_lib, "rest_predict", fake_rest)
  out = str(tmp_path / "client")
  client_lib.run(setup["inputs"], "http://unused", steps=T_TEST,
                 output_dir=out)
  out_md, _ = tool_outputs["model_dir"]
  for name in os.listdir(out):
    with open(os.path.join(out, name), "rb") as a, \
        open(os.path.join(out_md, name), "rb") as b:
      assert a.read() == b.read(), name
  assert len(os.listdir(out)) == 11


def test_load_segmenter_python_api(setup):
  segmenter = dis_tf.load_segmenter(setup["model_dir"])
  assert segmenter.t_test == setup["config"].latent.t_test
  with open(setup["inputs"][1], "rb") as f:
    data = f.read()
  rgb = np.asarray(Image.open(setup["inputs"][2]).convert("RGB"))
  results = segmenter.segment([setup["inputs"][0], data, rgb],
                              t_test=T_TEST, batch_size=2)
  assert [r.file for r in results] == [setup["inputs"][0], None, None]
  np.testing.assert_array_equal(results[0].class_ids,
                                _reference_ids(setup, 0))
  np.testing.assert_array_equal(results[1].class_ids,
                                _reference_ids(setup, 1))
  # An array goes in losslessly (as PNG): the pixels the JPEG decodes to.
  assert results[2].class_ids.shape == rgb.shape[:2]
  assert results[0].t_test == T_TEST
  assert results[0].tags == {
      results[0].class_names[c]: pytest.approx(float(p))
      for c, p in enumerate(setup["reference"]["tag_probabilities"][0])
      if c > 0 and p > 0.5}
  # The SavedModel base path resolves to its latest version.
  served = dis_tf.load_segmenter(os.path.dirname(setup["saved_model"]))
  [again] = served.segment(setup["inputs"][0], t_test=T_TEST)
  np.testing.assert_array_equal(again.class_ids, results[0].class_ids)


def test_segmenter_errors(setup, tmp_path):
  segmenter = dis_tf.load_segmenter(setup["saved_model"])
  with pytest.raises(errors.UserError, match=r"--t_test=1001: must be an "
                     r"integer in 0\.\.1000"):
    segmenter.segment(setup["inputs"][:1], t_test=1001)
  with pytest.raises(errors.MissingFileError, match="nope.jpg: no such file"):
    segmenter.segment([str(tmp_path / "nope.jpg")])
  with pytest.raises(errors.UserError, match=r"images\[0\]: expected"):
    segmenter.segment([np.zeros((0, 4, 3), np.uint8)])
  with pytest.raises(errors.UserError, match="neither a training run"):
    dis_tf.load_segmenter(str(tmp_path))
  with pytest.raises(errors.UserError, match="--latent.step_size: "
                     "configuration flags apply to a training run"):
    dis_tf.load_segmenter(setup["saved_model"],
                          overrides={"latent.step_size": 0.2})
  with pytest.raises(errors.UserError, match="no image file to segment"):
    segmenter_lib.predict_files(segmenter, [setup["bad"] + "/*.gif"],
                                str(tmp_path / "o"))


def test_rank_unlabelled_orders_by_the_served_quality(setup, tool_outputs,
                                                      run_tool, tmp_path):
  out = str(tmp_path / "ranking.csv")
  images = ",".join([os.path.join(setup["images"], "*.jpg"),
                     os.path.join(setup["other"], "val_000000.png"),
                     setup["bad"]])
  proc = run_tool("tools/rank_unlabelled.py",
                  f"--saved_model={setup['saved_model']}",
                  f"--images={images}", f"--output={out}",
                  f"--t_test={T_TEST}", "--top=2")
  with open(out, encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
  qualities = [float(r["quality"]) for r in rows]
  assert qualities == sorted(qualities)  # Least trusted first.
  # The same scores as predict's predictions.jsonl at the same t_test.
  records = _read_jsonl(os.path.join(tool_outputs["saved_model"][0],
                                     "predictions.jsonl"))
  expected = {r["file"]: r["quality"] for r in records}
  assert {r["file"] for r in rows} == set(expected)
  for r in rows:
    assert float(r["quality"]) == pytest.approx(expected[r["file"]],
                                                abs=1e-4)
  assert f"1. {rows[0]['file']}: quality" in proc.stdout
  assert "3. " not in proc.stdout
  assert f"{len(rows)} images ranked, 2 skipped" in proc.stdout


def test_rank_files_refuses_an_export_without_quality(setup):
  segmenter = dis_tf.load_segmenter(setup["saved_model"])

  def without_quality(image_bytes, steps):
    outputs = segmenter._serving_steps(image_bytes, steps)
    return {k: v for k, v in outputs.items() if k != "quality"}

  old = segmenter_lib.Segmenter(
      without_quality, segmenter.class_names, segmenter.t_test,
      segmenter.max_steps, segmenter.tag_threshold, "old export")
  with pytest.raises(errors.UserError, match="has no `quality` output"):
    segmenter_lib.rank_files(old, setup["inputs"][:1], progress=False)
  # predict_files still writes it, with a null quality.
  [result] = old.segment(setup["inputs"][:1])
  assert result.quality is None


# ------------------------------------------------------ prediction_io units
def _png_bytes(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def test_find_images(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "empty").mkdir()
  for name in ("x.jpg", "y.PNG", "z.txt"):
    (tmp_path / "a" / name).write_bytes(b"")
  a = str(tmp_path / "a")
  paths, problems = prediction_io.find_images(
      f"{a},{a}/*.jpg,{tmp_path}/empty,{tmp_path}/none.jpg,{tmp_path}/*.gif")
  # The folder gives its image files (sorted); the glob repeats x.jpg.
  assert paths == [f"{a}/x.jpg", f"{a}/y.PNG"]
  assert [str(p) for p in problems] == [
      f"{tmp_path}/empty: the folder has no images (.jpg, .jpeg, .png, "
      ".gif, .bmp).",
      f"{tmp_path}/none.jpg: no such file or folder.",
      f"{tmp_path}/*.gif: no file matches this pattern."]
  assert all(isinstance(p, errors.UserError) for p in problems)


def test_read_image_bad_files(tmp_path):
  good = _png_bytes(np.full((3, 5, 3), 7, np.uint8))
  cases = {
      "empty.png": (b"", r"empty file \(0 bytes\)"),
      "text.jpg": (b"hello", "not a JPEG, PNG, GIF or BMP image"),
      "cut.png": (good[:40], "corrupt or truncated image"),
  }
  for name, (data, message) in cases.items():
    (tmp_path / name).write_bytes(data)
    with pytest.raises(errors.UserError, match=message):
      prediction_io.read_image(str(tmp_path / name))
  (tmp_path / "ok.png").write_bytes(good)
  image = prediction_io.read_image(str(tmp_path / "ok.png"))
  assert image.data == good and image.rgb.shape == (3, 5, 3)
  assert (image.rgb == 7).all()
  # A directory where a file is expected cannot be read.
  with pytest.raises(errors.UserError, match="cannot be read"):
    prediction_io.read_image(str(tmp_path))


def test_writer_files_and_record(tmp_path):
  rgb = np.full((2, 3, 3), 100, np.uint8)
  ids = np.array([[0, 8, 8], [255, 15, 0]])
  probs = np.zeros(21, np.float32)
  probs[0], probs[8], probs[15] = 1.0, 0.91234567, 0.5
  names = serving_module.class_names_for(21)
  out = str(tmp_path / "out")
  with prediction_io.PredictionWriter(out) as writer:
    first = writer.write("a/cat.jpg", rgb, ids, probs, names, 5)
    second = writer.write("b/cat.png", rgb, ids, probs,
                          [n.encode() for n in names], None)
  assert (first["labelmap"], second["labelmap"]) == (
      "cat_labelmap.png", "cat_2_labelmap.png")
  assert first["tags"] == ["cat"]  # 0.5 is not above the threshold.
  assert first["tag_probabilities"]["cat"] == 0.9123
  assert first["classes"] == ["background", "cat", "person"]
  assert second["t_test"] is None
  assert _read_jsonl(os.path.join(out, "predictions.jsonl")) == [first,
                                                                 second]
  labelmap = Image.open(os.path.join(out, "cat_labelmap.png"))
  assert labelmap.mode == "P"
  np.testing.assert_array_equal(np.asarray(labelmap), ids)
  blended = np.asarray(Image.open(os.path.join(out, "cat_overlay.png")))
  cat = voc_palette()[8].astype(np.float32)
  np.testing.assert_array_equal(blended[0, 1], np.round(50 + cat / 2))
  np.testing.assert_array_equal(blended[0, 0], [100, 100, 100])  # background
  np.testing.assert_array_equal(blended[1, 0], [100, 100, 100])  # ignore
  assert sorted(os.listdir(out)) == [
      "cat_2_labelmap.png", "cat_2_overlay.png", "cat_labelmap.png",
      "cat_overlay.png", "predictions.jsonl"]


def test_progress_lines(capsys):
  bar = prediction_io.Progress(20, stream=sys.stdout)
  for done in (2, 3, 10, 20):
    bar.update(done, skipped=1)
  lines = capsys.readouterr().out.splitlines()
  assert lines == [
      "[###" + "." * 27 + "] 2/20 images, 1 skipped",
      "[" + "#" * 15 + "." * 15 + "] 10/20 images, 1 skipped",
      "[" + "#" * 30 + "] 20/20 images, 1 skipped"]
