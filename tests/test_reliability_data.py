"""Bad data at scale: a generated tree with ~5% broken files mixed in.

The VOC tree (100 train, 20 val, 10 tag-only images) and the web-tag folder
(100 images) get corrupt / truncated images, masks of the wrong size,
wrongly coloured RGB masks, out-of-range class ids, missing images and
masks, an unparsable XML, RGBA and 16-bit images. Then:

* default (strict): the build stops at the first bad file, with a message
  naming that file;
* `skip_bad_files=True`: exactly the bad ones are skipped, the log states
  the count and every name, and every good example is present and paired
  with its own mask / tags (compared with the source files).
"""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from dis_tf import classes
from dis_tf.data import synthetic
from dis_tf.data import voc
from dis_tf.data import web_tags

NUM_TRAIN, NUM_VAL, NUM_TAGS_ONLY, NUM_WEAK = 100, 20, 10, 100


def _list(root, split):
  path = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
  return open(path).read().split()


def _break_voc(root):
  """Breaks ~5% of the VOC files; returns {split: {id: expected message}}."""
  train = _list(root, "train")
  val = _list(root, "val")
  jpg = lambda n: os.path.join(root, "JPEGImages", n + ".jpg")
  png = lambda n: os.path.join(root, "SegmentationClass", n + ".png")
  bad = {}
  # Train, in list order: the strict build must name the first of these.
  name = train[3]  # truncated JPEG
  data = open(jpg(name), "rb").read()
  with open(jpg(name), "wb") as f:
    f.write(data[: len(data) // 3])
  bad[name] = ("corrupt or truncated image", jpg(name))
  name = train[17]  # mask of the wrong size (a mismatched pair)
  mask = voc.read_label_png(png(name))
  voc.write_label_png(png(name), np.pad(mask, ((0, 0), (0, 5))))
  bad[name] = ("differs from its image", png(name))
  name = train[31]  # RGB mask with a colour that is no VOC class colour
  colours = classes.voc_palette()[voc.read_label_png(png(name))]
  colours[:2, :2] = (10, 200, 30)
  Image.fromarray(colours).save(png(name))
  bad[name] = ("not VOC class colours", png(name))
  name = train[48]  # missing image
  os.remove(jpg(name))
  bad[name] = ("listed but does not exist", jpg(name))
  name = train[62]  # missing mask
  os.remove(png(name))
  bad[name] = ("does not exist", png(name))
  name = train[80]  # palette index outside 0..20, 255
  mask = voc.read_label_png(png(name))
  mask[0, 0] = 77
  voc.write_label_png(png(name), mask)
  bad[name] = ("class ids [77]", png(name))
  name = train[95]  # zero-byte mask
  open(png(name), "wb").close()
  bad[name] = ("corrupt or truncated mask", png(name))
  name = val[5]  # RGBA image saved as PNG bytes under .jpg
  rgba = np.zeros((20, 20, 4), np.uint8)
  Image.fromarray(rgba).save(jpg(name), format="PNG")
  val_bad = {name: ("alpha channel", jpg(name))}
  tags_only = sorted(n[: -len(".xml")] for n in os.listdir(
      os.path.join(root, "Annotations")) if n.startswith("tagonly_"))
  name = tags_only[2]  # unparsable XML
  xml = os.path.join(root, "Annotations", name + ".xml")
  with open(xml, "w") as f:
    f.write("<annotation><object><name>dog</name>")
  tags_bad = {name: ("unparsable XML", xml)}
  return {"train": bad, "val": val_bad,
          "trainval": dict(bad, **val_bad), "tags_only": tags_bad}


def _break_web(weak_dir):
  """Breaks 5 of the web-tag images; returns {relative path: message}."""
  records = [json.loads(line) for line in open(
      os.path.join(weak_dir, "annotations.jsonl"))]
  path = lambda i: os.path.join(weak_dir, records[i]["image"])
  bad = {}
  with open(path(4), "wb") as f:
    f.write(os.urandom(300))  # random bytes
  bad[records[4]["image"]] = "corrupt or truncated image"
  os.remove(path(20))
  bad[records[20]["image"]] = "listed but does not exist"
  Image.fromarray(np.zeros((16, 16), np.uint16) + 4000).save(
      path(41), format="PNG")  # 16-bit grayscale
  bad[records[41]["image"]] = "16/32-bit image"
  Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(path(63),
                                                        format="PNG")
  bad[records[63]["image"]] = "alpha channel"
  data = open(path(88), "rb").read()
  with open(path(88), "wb") as f:
    f.write(data[:200])  # truncated JPEG
  bad[records[88]["image"]] = "corrupt or truncated image"
  return records, bad


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  base = tmp_path_factory.mktemp("bad_data")
  clean = str(base / "clean")
  info = synthetic.generate_benchmark(
      clean, num_train=NUM_TRAIN, num_val=NUM_VAL,
      num_tags_only=NUM_TAGS_ONLY, num_weak=NUM_WEAK, image_size=32)
  broken = str(base / "broken")
  shutil.copytree(clean, broken)
  root = os.path.join(broken, "VOCdevkit", "VOC2012")
  clean_root = os.path.join(clean, "VOCdevkit", "VOC2012")
  voc_bad = _break_voc(root)
  records, web_bad = _break_web(os.path.join(broken, "web_tags"))
  return {"base": base, "broken": broken, "root": root,
          "clean_root": clean_root, "voc_bad": voc_bad,
          "weak_dir": os.path.join(broken, "web_tags"),
          "clean_weak": info["weak_dir"], "records": records,
          "web_bad": web_bad}


def test_bad_fraction_is_a_few_percent(trees):
  total = NUM_TRAIN + NUM_VAL + NUM_TAGS_ONLY + NUM_WEAK
  num_bad = (len(trees["voc_bad"]["trainval"]) + len(trees["voc_bad"][
      "tags_only"]) + len(trees["web_bad"]))
  assert 0.02 <= num_bad / total <= 0.07  # 14 / 230 = 6%


def test_strict_voc_build_stops_at_the_first_bad_file(trees):
  builder = voc.voc_builder(trees["broken"],
                            str(trees["base"] / "tfds_strict"))
  with pytest.raises(voc.BadFileError) as info:
    builder.download_and_prepare()
  train = _list(trees["root"], "train")
  first = min(trees["voc_bad"]["train"], key=train.index)
  message, path = trees["voc_bad"]["train"][first]
  assert str(info.value).startswith(path), str(info.value)
  assert message in str(info.value)


def test_strict_web_build_stops_at_the_first_bad_file(trees):
  builder = web_tags.web_tags_builder(trees["weak_dir"],
                                      str(trees["base"] / "tfds_strict"))
  with pytest.raises(voc.BadFileError) as info:
    builder.download_and_prepare()
  first = next(r["image"] for r in trees["records"]
               if r["image"] in trees["web_bad"])
  assert str(info.value).startswith(os.path.join(
      os.path.realpath(trees["weak_dir"]), first)), str(info.value)
  assert trees["web_bad"][first] in str(info.value)


def _pixels(path):
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"), np.int32)


def test_skip_voc_skips_exactly_the_bad_ones(trees, caplog):
  builder = voc.voc_builder(trees["broken"], str(trees["base"] / "tfds_skip"),
                            skip_bad_files=True)
  with caplog.at_level(logging.WARNING):
    builder.download_and_prepare()
  root, clean = trees["root"], trees["clean_root"]
  for split, bad in trees["voc_bad"].items():
    # The count and every bad file's name, in the split's report.
    report = [r.getMessage() for r in caplog.records
              if f"voc2012_segmentation/{split}:" in r.getMessage()]
    assert len(report) == 1, (split, report)
    assert f"skipped {len(bad)} bad file(s)" in report[0]
    for name, (message, path) in bad.items():
      assert path in report[0] and message in report[0], (split, name)
    if split == "tags_only":
      expected = {n[: -len(".xml")] for n in os.listdir(
          os.path.join(clean, "Annotations")) if n.startswith("tagonly_")}
    else:
      expected = set(_list(root, split))
    expected -= set(bad)
    got = {ex["file_name"].decode(): ex for ex in tfds.as_numpy(
        builder.as_dataset(split=split))}
    assert set(got) == expected, split
    assert builder.info.splits[split].num_examples == len(expected)
    for name, ex in got.items():
      # Paired with its own files: image and mask compared with the clean
      # source (JPEG bytes are stored as they are; decoders differ by <2).
      pixels = _pixels(os.path.join(clean, "JPEGImages", name + ".jpg"))
      assert ex["image"].shape == pixels.shape, name
      assert np.abs(ex["image"].astype(np.int32) - pixels).mean() < 2.0
      if split == "tags_only":
        assert (ex["mask"] == 255).all()
        assert sorted(ex["tags"].tolist()) == voc.read_xml_tags(
            os.path.join(clean, "Annotations", name + ".xml"))
      else:
        want = voc.read_label_png(
            os.path.join(clean, "SegmentationClass", name + ".png"))
        np.testing.assert_array_equal(ex["mask"][..., 0], want)
        assert sorted(ex["tags"].tolist()) == voc.tags_from_mask(want)


def test_skip_web_skips_exactly_the_bad_ones(trees, caplog):
  builder = web_tags.web_tags_builder(
      trees["weak_dir"], str(trees["base"] / "tfds_skip"),
      skip_bad_files=True)
  with caplog.at_level(logging.WARNING):
    builder.download_and_prepare()
  report = [r.getMessage() for r in caplog.records
            if "skipped" in r.getMessage() and "web_tags" in r.getMessage()]
  assert len(report) == 1, report
  assert f"skipped {len(trees['web_bad'])} bad file(s)" in report[0]
  for rel, message in trees["web_bad"].items():
    assert rel in report[0]
  got = {ex["file_name"].decode(): ex for ex in tfds.as_numpy(
      builder.as_dataset(split="train"))}
  records = trees["records"]
  assert set(got) == {r["image"] for r in records} - set(trees["web_bad"])
  truth = web_tags.load_weak_truth(trees["clean_weak"], load_masks=False)
  for r in records:
    if r["image"] not in got:
      continue
    ex = got[r["image"]]
    pixels = _pixels(os.path.join(trees["clean_weak"], r["image"]))
    assert np.abs(ex["image"].astype(np.int32) - pixels).mean() < 2.0
    _, tags, caption = web_tags.parse_annotation_line(json.dumps(r), "", 0)
    assert sorted(ex["tags"].tolist()) == tags
    assert ex["caption"].decode() == caption
    assert r["image"] in truth
