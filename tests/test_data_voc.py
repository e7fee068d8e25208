"""voc2012_segmentation builder and VOC label-PNG decoding."""

import logging
import os

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from dis_tf import classes
from dis_tf.data import safe_paths
from dis_tf.data import synthetic
from dis_tf.data import voc

TINY = dict(num_train=3, num_val=2, num_weak=0, num_tags_only=2, num_aug=0,
            image_size=48)


def _tree(tmp_path, **kwargs):
  out = str(tmp_path / "src")
  synthetic.generate_benchmark(out, **dict(TINY, **kwargs))
  return out, os.path.join(out, "VOCdevkit", "VOC2012")


@pytest.fixture
def prepare(prepare_tfds, tmp_path):
  """`prepare(manual_dir, skip=False)`: the tfds way (default config,
  manual_dir in the download config)."""
  return lambda manual_dir, skip=False: prepare_tfds(
      voc.Voc2012Segmentation, voc.VocSegmentationConfig, manual_dir,
      tmp_path / "tfds", skip=skip)


def _ids_mask(seed=0, shape=(17, 23)):
  rng = np.random.default_rng(seed)
  values = np.array(list(range(21)) + [255], np.uint8)
  return values[rng.integers(0, len(values), size=shape)]


# -- decoding ---------------------------------------------------------------


def test_palette_png_gives_ids_not_colours(tmp_path):
  ids = _ids_mask()
  path = str(tmp_path / "m.png")
  voc.write_label_png(path, ids)
  with Image.open(path) as img:
    assert img.mode == "P"
  np.testing.assert_array_equal(voc.read_label_png(path), ids)
  # The pitfall: TensorFlow's PNG decoder returns the palette colours.
  decoded = tf.io.decode_png(tf.io.read_file(path), channels=3).numpy()
  np.testing.assert_array_equal(decoded, classes.voc_palette()[ids])
  assert not np.array_equal(decoded[..., 0], ids)


def test_gray_and_rgb_masks(tmp_path):
  ids = _ids_mask(1)
  gray = str(tmp_path / "g.png")
  Image.fromarray(ids, mode="L").save(gray)
  np.testing.assert_array_equal(voc.read_label_png(gray), ids)
  rgb = str(tmp_path / "c.png")
  Image.fromarray(classes.voc_palette()[ids]).save(rgb)
  np.testing.assert_array_equal(voc.read_label_png(rgb), ids)
  colours = classes.voc_palette()[ids]
  colours[0, 0] = (1, 2, 3)
  Image.fromarray(colours).save(rgb)
  with pytest.raises(voc.BadFileError, match=r"c.png: RGB mask .*\(1, 2, 3\)"):
    voc.read_label_png(rgb)


# -- building ---------------------------------------------------------------


def test_build_from_generated_tree(tmp_path, prepare, tfds_examples):
  out, root = _tree(tmp_path, num_aug=2)
  builder = prepare(out)
  splits = builder.info.splits
  assert splits["train"].num_examples == 3
  assert splits["val"].num_examples == 2
  assert splits["trainval"].num_examples == 5
  assert splits["train_aug"].num_examples == 5
  # tags_only = ImageSets/Main minus the Segmentation lists: the tag-only
  # images and the augmented-set images (as for real VOC + SBD).
  assert splits["tags_only"].num_examples == 4
  for split, folder in (("train", "SegmentationClass"),
                        ("val", "SegmentationClass"),
                        ("train_aug", "SegmentationClassAug")):
    for name, ex in tfds_examples(builder, split).items():
      want = voc.read_label_png(os.path.join(root, folder, name + ".png"))
      np.testing.assert_array_equal(ex["mask"][..., 0], want)
      assert sorted(ex["tags"].tolist()) == voc.tags_from_mask(want)
      with Image.open(os.path.join(root, "JPEGImages", name + ".jpg")) as im:
        pixels = np.asarray(im.convert("RGB"), np.int32)
      assert ex["image"].shape == pixels.shape
      assert np.abs(ex["image"].astype(np.int32) - pixels).mean() < 2.0
  seg_ids = set(tfds_examples(builder, "trainval"))
  for name, ex in tfds_examples(builder, "tags_only").items():
    assert name.startswith(("tagonly_", "aug_")) and name not in seg_ids
    assert (ex["mask"] == 255).all()
    assert sorted(ex["tags"].tolist()) == voc.read_xml_tags(
        os.path.join(root, "Annotations", name + ".xml"))


def test_source_fingerprint_avoids_stale_data(tmp_path):
  data_dir = str(tmp_path / "tfds")
  a = str(tmp_path / "a")
  b = str(tmp_path / "b")
  synthetic.generate_benchmark(a, seed=1, **TINY)
  synthetic.generate_benchmark(b, seed=2, **dict(TINY, num_train=4))
  ba = voc.voc_builder(a, data_dir)
  bb = voc.voc_builder(b, data_dir)
  assert ba.builder_config.name != bb.builder_config.name
  ba.download_and_prepare()
  bb.download_and_prepare()
  assert ba.info.splits["train"].num_examples == 3
  assert bb.info.splits["train"].num_examples == 4
  # Rewriting a list changes the fingerprint too.
  lst = os.path.join(a, "VOCdevkit", "VOC2012", "ImageSets", "Segmentation",
                     "train.txt")
  names = open(lst).read().split()
  with open(lst, "w") as f:
    f.write("\n".join(names[:2]) + "\n")
  os.utime(lst, ns=(1, 1))
  assert voc.voc_builder(a, data_dir).builder_config.name != (
      ba.builder_config.name)
  assert voc.voc_builder(a, data_dir, skip_bad_files=True).builder_config.name\
      .endswith("_skip")


def test_missing_voc_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match="no VOCdevkit/VOC2012"):
    voc.voc_builder(str(tmp_path), str(tmp_path / "tfds"))


# -- bad input --------------------------------------------------------------


def _first_train(root):
  path = os.path.join(root, "ImageSets", "Segmentation", "train.txt")
  return open(path).read().split()[0]


def _expect_build_error(prepare, out, match, error=voc.BadFileError):
  with pytest.raises(error, match=match):
    prepare(out)


def test_corrupt_image(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  with open(os.path.join(root, "JPEGImages", name + ".jpg"), "wb") as f:
    f.write(b"this is not a jpeg")
  _expect_build_error(prepare, out, rf"{name}.jpg: corrupt or truncated")


def test_truncated_image(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  path = os.path.join(root, "JPEGImages", name + ".jpg")
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])
  _expect_build_error(prepare, out, rf"{name}.jpg: corrupt or truncated")


def test_listed_but_missing(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  os.remove(os.path.join(root, "JPEGImages", name + ".jpg"))
  _expect_build_error(prepare, out, rf"{name}.jpg: image file is listed but "
                      "does not exist")


def test_missing_mask(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  os.remove(os.path.join(root, "SegmentationClass", name + ".png"))
  _expect_build_error(prepare, out, rf"{name}.png: mask of '{name}'.*does "
                      "not exist")


def test_mask_size_differs(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  voc.write_label_png(os.path.join(root, "SegmentationClass", name + ".png"),
                      np.zeros((5, 7), np.uint8))
  _expect_build_error(prepare, out, rf"{name}.png: mask size 7x5 .*differs")


def test_mask_ids_out_of_range(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  path = os.path.join(root, "SegmentationClass", name + ".png")
  mask = voc.read_label_png(path)
  mask[0, :3] = [21, 100, 254]
  voc.write_label_png(path, mask)
  _expect_build_error(prepare, out,
                      rf"{name}.png: mask has class ids \[21, 100, 254\]")


def _replace_image(root, name, img):
  # VOC lists name .jpg files; the content decides the decoder.
  img.save(os.path.join(root, "JPEGImages", name + ".jpg"), format="PNG")


def test_grayscale_image_is_converted(tmp_path, prepare, tfds_examples):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  mask = voc.read_label_png(
      os.path.join(root, "SegmentationClass", name + ".png"))
  gray = np.random.default_rng(0).integers(0, 256, mask.shape, np.uint8)
  _replace_image(root, name, Image.fromarray(gray, mode="L"))
  ex = tfds_examples(prepare(out), "train")[name]
  np.testing.assert_array_equal(ex["image"], np.repeat(gray[..., None], 3, 2))


def test_rgba_image_is_refused(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  _replace_image(root, name, Image.new("RGBA", (48, 40)))
  _expect_build_error(prepare, out, rf"{name}.jpg: image has an alpha")


def test_16bit_image_is_refused(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  img = Image.fromarray(np.full((40, 48), 40000, np.uint16))
  assert img.mode.startswith("I;16")
  _replace_image(root, name, img)
  _expect_build_error(prepare, out, rf"{name}.jpg: .*16/32-bit image")


def test_empty_split(tmp_path, prepare):
  out, root = _tree(tmp_path)
  open(os.path.join(root, "ImageSets", "Segmentation", "val.txt"), "w").close()
  _expect_build_error(prepare, out, r"val.txt: the image-set list is empty")


def test_duplicate_entry(tmp_path, prepare):
  out, root = _tree(tmp_path)
  path = os.path.join(root, "ImageSets", "Segmentation", "train.txt")
  name = _first_train(root)
  with open(path, "a") as f:
    f.write(name + "\n")
  _expect_build_error(prepare, out, rf"train.txt:4: id '{name}' already")


def test_skip_bad_files_counts_and_keeps_pairing(tmp_path, caplog, prepare,
                                                  tfds_examples):
  out, root = _tree(tmp_path, num_train=6)
  names = open(os.path.join(root, "ImageSets", "Segmentation",
                            "train.txt")).read().split()
  with open(os.path.join(root, "JPEGImages", names[1] + ".jpg"), "wb") as f:
    f.write(b"garbage")
  os.remove(os.path.join(root, "SegmentationClass", names[3] + ".png"))
  with caplog.at_level(logging.WARNING):
    builder = prepare(out, skip=True)
  assert "voc2012_segmentation/train: skipped 2 bad file(s)" in caplog.text
  assert builder.info.splits["train"].num_examples == 4
  got = tfds_examples(builder, "train")
  assert sorted(got) == sorted(
      n for i, n in enumerate(names) if i not in (1, 3))
  for name, ex in got.items():  # every mask still belongs to its image
    np.testing.assert_array_equal(ex["mask"][..., 0], voc.read_label_png(
        os.path.join(root, "SegmentationClass", name + ".png")))


@pytest.mark.parametrize("entry", ["../../../etc/passwd", "/etc/passwd",
                                   "sub/dir"])
def test_list_entries_cannot_escape(tmp_path, entry, prepare):
  out, root = _tree(tmp_path)
  with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"),
            "a") as f:
    f.write(entry + "\n")
  _expect_build_error(prepare, out, r"train.txt:4: image-set entry",
                      safe_paths.UnsafePathError)


def test_deeplab_list_cannot_escape(tmp_path, prepare):
  out, root = _tree(tmp_path, num_aug=1)
  path = os.path.join(root, "ImageSets", "SegmentationAug", "train_aug.txt")
  with open(path, "w") as f:
    f.write("/JPEGImages/../../x.jpg /SegmentationClassAug/x.png\n")
  _expect_build_error(prepare, out, r"train_aug.txt:1: path .* contains '..'",
                      safe_paths.UnsafePathError)


def test_symlink_out_of_tree_is_refused(tmp_path, prepare):
  out, root = _tree(tmp_path)
  name = _first_train(root)
  outside = tmp_path / "outside.jpg"
  image = os.path.join(root, "JPEGImages", name + ".jpg")
  os.replace(image, outside)
  os.symlink(outside, image)
  _expect_build_error(prepare, out, r"outside the dataset root",
                      safe_paths.UnsafePathError)


def test_xml_errors(tmp_path, prepare):
  out, root = _tree(tmp_path)
  main = open(os.path.join(root, "ImageSets", "Main", "train.txt")).read()
  name = [n for n in main.split() if n.startswith("tagonly_")][0]
  xml = os.path.join(root, "Annotations", name + ".xml")
  text = open(xml).read()
  with open(xml, "w") as f:
    f.write(text.replace("<object><name>", "<object><name>unicorn", 1))
  _expect_build_error(prepare, out, rf"{name}.xml: object name '\w*unicorn")
  with open(xml, "w") as f:
    f.write("<annotation><filename>x.jpg</filename></annotation>")
  _expect_build_error(prepare, out, rf"{name}.xml: no <object>.*empty tag")


def test_builder_uses_tfds_own_code_path():
  """tfds' `code_path` (it needs importlib_resources, which requirements.txt
  pins) finds the builder's module: no override is needed."""
  assert os.path.basename(str(voc.Voc2012Segmentation.code_path)) == "voc.py"
