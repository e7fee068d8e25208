"""tools/prepare_data.py: a plain folder -> the training layout, bad input."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from dis_tf import classes
from dis_tf import errors
from dis_tf.data import folder
from dis_tf.data import synthetic_folder
from dis_tf.data import voc

CLASS_SET = classes.ClassSet(
    names=("background", "crack", "rust", "paint", "weld"),
    colors=((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)),
    synonyms=((), ("fissure",), ("corrosion",), (), ()))


@pytest.fixture
def source(tmp_path):
  return synthetic_folder.write_plain_folder(
      str(tmp_path / "my_data"), CLASS_SET, num_labelled=8, num_weak=6,
      image_size=32)


def _prepare(source, tmp_path, **kwargs):
  return folder.prepare_folder(source, str(tmp_path / "out"), **kwargs)


def test_plain_folder_becomes_the_voc_layout_and_web_tags(source, tmp_path):
  report = _prepare(source, tmp_path)
  out = tmp_path / "out"
  assert report["labelled_images"] == 8 and report["masks"] == 8
  assert (report["train"], report["val"]) == (6, 2)
  assert report["weak_images"] == 6 and report["captions_parsed"] == 6
  assert report["files_skipped"] == 0
  assert report["largest_side"] == 32  # The fixture's square images.
  assert sum(report["tags_per_class"].values()) >= 6
  root = out / "VOC2012"
  train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
  val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
  assert len(train) == 6 and len(val) == 2 and not set(train) & set(val)
  # Deterministic: the same split again.
  again = folder.prepare_folder(source, str(tmp_path / "again"))
  assert (tmp_path / "again/VOC2012/ImageSets/Segmentation/val.txt"
          ).read_text().split() == val and again["val"] == 2
  # Masks of every input format (palette, gray, RGB) -> the same ids.
  for i in range(3):
    name = f"img_{i:04d}"
    original = voc.read_label_png(
        os.path.join(source, "labelled/masks", name + ".png"), None,
        CLASS_SET)
    written = Image.open(root / "SegmentationClass" / (name + ".png"))
    assert written.mode == "P"
    assert (np.asarray(written) == original).all()
    assert tuple(written.getpalette()[3:6]) == (255, 0, 0)
  assert classes.load_class_set(root / "classes.txt") == CLASS_SET
  assert classes.load_class_set(out / "weak/classes.txt") == CLASS_SET
  record = json.loads((out / "weak/annotations.jsonl").read_text()
                      .splitlines()[0])
  assert set(record["tags"]) <= set(CLASS_SET.names[1:])
  assert json.loads((out / folder.REPORT_FILE).read_text()) == report


def test_split_lists_are_used_when_given(source, tmp_path):
  labelled = os.path.join(source, "labelled")
  with open(os.path.join(labelled, "train.txt"), "w") as f:
    f.write("img_0000\nimg_0001\nimg_0002\n")
  with open(os.path.join(labelled, "val.txt"), "w") as f:
    f.write("img_0003\n")
  report = _prepare(source, tmp_path)
  assert (report["train"], report["val"]) == (3, 1)


def _corrupt(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 3])


def _break(source, case):
  """Makes `case` in `source`; returns (the file named, its line or None)."""
  labelled = os.path.join(source, "labelled")
  weak = os.path.join(source, "weak")
  mask = os.path.join(labelled, "masks", "img_0001.png")
  if case == "mask id outside the class set":
    ids = np.asarray(Image.open(mask)).copy()
    ids[0, 0] = 7
    Image.fromarray(ids, mode="L").save(mask)
    return mask, None
  if case == "mask size differs":
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(mask)
    return mask, None
  if case == "image without mask":
    os.remove(mask)
    return os.path.join(labelled, "images", "img_0001.png"), None
  if case == "mask without image":
    os.remove(os.path.join(labelled, "images", "img_0001.png"))
    return mask, None
  if case == "duplicate names":
    Image.new("RGB", (32, 32)).save(
        os.path.join(labelled, "images", "img_0001.jpg"))
    return os.path.join(labelled, "images", "img_0001.png"), None
  if case == "truncated image":
    path = os.path.join(labelled, "images", "img_0002.jpg")
    _corrupt(path)
    return path, None
  if case == "truncated weak image":
    path = os.path.join(weak, "web_0002.jpg")
    _corrupt(path)
    return path, None
  index = os.path.join(weak, "captions.tsv")
  with open(index) as f:
    lines = f.read().splitlines()
  if case == "caption naming no class":
    lines[3] = "web_0003.jpg\ta quiet empty street"
  elif case == "duplicate index line":
    lines[4] = lines[1]
    os.remove(os.path.join(weak, "web_0004.jpg"))
  elif case == "unknown tag name":
    os.remove(index)
    index = os.path.join(weak, "tags.jsonl")
    lines = [json.dumps({"image": f"web_{i:04d}.jpg", "tags": ["crack"]})
             for i in range(6)]
    lines[2] = json.dumps({"image": "web_0002.jpg", "tags": ["dent"]})
  with open(index, "w") as f:
    f.write("\n".join(lines) + "\n")
  line = {"caption naming no class": 4, "duplicate index line": 5,
          "unknown tag name": 3}[case]
  return index, line


CASES = {
    "mask id outside the class set": "mask has class ids [7] outside the 5 "
                                     "classes of classes.txt",
    "mask size differs": "mask size 12x10 (WxH) differs from its image",
    "image without mask": "image has no mask",
    "mask without image": "mask has no image",
    "duplicate names": "duplicate name",
    "truncated image": "corrupt or truncated image",
    "truncated weak image": "corrupt or truncated image",
    "caption naming no class": "caption 'a quiet empty street' names no "
                               "class of classes.txt",
    "duplicate index line": "is already listed on line 2",
    "unknown tag name": "unknown tag name(s) ['dent']; use class names",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_the_file(source, tmp_path, case):
  path, line = _break(source, case)
  with pytest.raises(errors.UserError) as e:
    _prepare(source, tmp_path)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"{path}:{line}: " if line else f"{path}: "), (
      message)
  assert CASES[case] in message
  assert not os.path.exists(tmp_path / "out")  # Nothing half-written.


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_skipped_and_counted(source, tmp_path, case):
  path, _ = _break(source, case)
  report = _prepare(source, tmp_path, skip_bad_files=True)
  assert report["files_skipped"] >= 1
  assert any(s.startswith(path) for s in report["skipped"]), report
  # Nothing else is lost: every labelled pair or weak image not named is
  # kept.
  assert report["labelled_images"] + report["weak_images"] >= 14 - 2
  out = tmp_path / "out"
  names = {n[:-4] for n in os.listdir(out / "VOC2012/JPEGImages")}
  masks = {n[:-4] for n in os.listdir(out / "VOC2012/SegmentationClass")}
  assert names == masks  # Never mis-paired.


@pytest.mark.parametrize("text, line, message", [
    ("background\ncrack\nCrack\n", 3, "duplicate class name 'Crack'"),
    ("background\n  | #ff0000\n", 2, "empty class name"),
])
def test_bad_class_file_is_an_error_even_when_skipping(source, tmp_path, text,
                                                       line, message):
  path = os.path.join(source, "classes.txt")
  with open(path, "w") as f:
    f.write(text)
  with pytest.raises(classes.ClassFileError) as e:
    _prepare(source, tmp_path, skip_bad_files=True)
  assert str(e.value).startswith(f"{path}:{line}: ")
  assert message in str(e.value)


def test_tool_prints_counts_and_one_error_line(source, tmp_path, run_tool):
  proc = run_tool("tools/prepare_data.py", f"--source={source}",
                  f"--output={tmp_path / 'out'}")
  assert "labelled images: 8 with masks (train 6, val 2)" in proc.stdout
  assert "pixels per class: background" in proc.stdout
  assert "files skipped: 0" in proc.stdout
  assert "largest labelled image side: 32 px" in proc.stdout
  path, _ = _break(source, "mask size differs")
  proc = run_tool("tools/prepare_data.py", f"--source={source}",
                  f"--output={tmp_path / 'out2'}", check=False)
  assert proc.returncode == 1
  (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
  assert line.startswith(f"error: {path}: mask size 12x10")
