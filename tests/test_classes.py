"""Class sets as data: the class file, the config and the fingerprint."""

import os

import numpy as np
import pytest

from dis_tf import classes
from dis_tf import config as config_lib
from dis_tf import errors
from dis_tf import model_dir as model_dir_lib

GOOD = """\
# inspection photos
background | #000000
crack | #ff0000 | fissure, split
rust  |         | corrosion
paint
"""


def _write(tmp_path, text, name="classes.txt"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_class_file_is_read_in_id_order_with_colours_and_synonyms(tmp_path):
  class_set = classes.load_class_set(_write(tmp_path, GOOD))
  assert class_set.names == ("background", "crack", "rust", "paint")
  assert class_set.num_classes == 4
  assert class_set.colors[1] == (255, 0, 0)
  # No colour given: the VOC palette's colour of that id.
  assert class_set.colors[2] == tuple(classes.voc_palette()[2])
  assert class_set.synonyms[1] == ("fissure", "split")
  palette = class_set.palette()
  assert palette.shape == (256, 3) and palette.dtype == np.uint8
  assert tuple(palette[1]) == (255, 0, 0)
  assert tuple(palette[255]) == (224, 224, 192)
  assert classes.ClassSet.from_json(class_set.to_json()) == class_set
  # write_class_set round-trips.
  out = str(tmp_path / "again.txt")
  classes.write_class_set(class_set, out)
  assert classes.load_class_set(out) == class_set


def test_voc_class_file_is_the_shipped_voc_set(tmp_path):
  path = _write(tmp_path, "\n".join(classes.VOC_CLASSES))
  assert classes.load_class_set(path) is classes.VOC
  assert classes.VOC.names == classes.VOC_CLASSES
  assert (classes.VOC.palette() == classes.voc_palette()).all()


@pytest.mark.parametrize("text, line, message", [
    ("background\ncrack\ncrack\n", 3, "duplicate class name 'crack'"),
    ("background\n | #ff0000\n", 2, "empty class name"),
    ("background\ncrack | red\n", 2, "colour 'red' of 'crack' is not"),
    ("background\ncrack | | split\nrust | | split\n", 3,
     "'split' is already the name or a synonym of class 'crack'"),
    ("background\nbad/name\n", 2, "class name 'bad/name' must start"),
])
def test_bad_class_file_is_one_line_naming_file_and_line(
    tmp_path, text, line, message):
  path = _write(tmp_path, text)
  with pytest.raises(classes.ClassFileError) as e:
    classes.load_class_set(path)
  assert f"{path}:{line}: " in str(e.value)
  assert message in str(e.value)
  assert "\n" not in str(e.value)


def test_one_class_is_not_a_class_set(tmp_path):
  path = _write(tmp_path, "# only\nbackground\n")
  with pytest.raises(classes.ClassFileError, match="at least 2"):
    classes.load_class_set(path)


def test_config_takes_the_class_set_and_its_count(tmp_path):
  path = _write(tmp_path, GOOD)
  config = config_lib.resolve_config("tiny", {"data.classes": path})
  assert config.model.num_classes == 4
  assert classes.from_config(config).names[1] == "crack"
  assert config.to_dict()["class_set"]["names"][3] == "paint"
  again = config_lib.ExperimentConfig.from_dict(config.to_dict())
  assert classes.from_config(again) == classes.from_config(config)
  with pytest.raises(errors.UserError, match="model.num_classes=21: the "
                     "class set"):
    config_lib.resolve_config("tiny", {"data.classes": path,
                                       "model.num_classes": 21})
  # Without a class file: VOC, as before.
  default = config_lib.resolve_config("synthetic")
  assert default.class_set is None and default.model.num_classes == 21


def test_class_file_in_voc_dir_is_used_and_must_agree(tmp_path):
  voc = tmp_path / "voc"
  voc.mkdir()
  _write(voc, GOOD)
  config = config_lib.resolve_config("tiny", {"data.voc_dir": str(voc)})
  assert classes.from_config(config).names[-1] == "paint"
  other = _write(tmp_path, "background\ncar\nroad\n", "other.txt")
  with pytest.raises(errors.UserError) as e:
    config_lib.resolve_config("tiny", {"data.voc_dir": str(voc),
                                       "data.classes": other})
  assert "3 classes (background, car, road)" in str(e.value)
  assert "4 classes (background, crack, rust, paint)" in str(e.value)


def test_class_names_are_fingerprinted(tmp_path):
  voc_config = config_lib.resolve_config("tiny")
  fields = model_dir_lib.training_fields(voc_config, "a")
  # VOC runs: no new field, so their recorded fingerprints still match.
  assert model_dir_lib.CLASS_NAMES_KEY not in fields
  mine = config_lib.resolve_config("tiny", {
      "data.classes": _write(tmp_path, GOOD)})
  other = model_dir_lib.training_fields(mine, "a")
  assert other[model_dir_lib.CLASS_NAMES_KEY][1] == "crack"
  differences = {key: (old, new) for key, old, new in
                 model_dir_lib.field_differences(fields, other)}
  assert differences["model.num_classes"] == (21, 4)
  old, new = differences[model_dir_lib.CLASS_NAMES_KEY]
  assert old == list(classes.VOC_CLASSES) and new[1] == "crack"


def test_captions_and_tags_of_a_class_set(tmp_path):
  from dis_tf.data import captions  # pylint: disable=g-import-not-at-top
  class_set = classes.load_class_set(_write(tmp_path, GOOD))
  lexicon = captions.lexicon_for(class_set)
  assert captions.parse_caption("two fissures and no corrosion",
                                lexicon) == [1]
  assert captions.parse_caption("rusty paint, cracks", lexicon) == [1, 3]
  assert captions.tag_to_class_id("Background", lexicon) == 0
  assert captions.tag_to_class_id("corrosion", lexicon) == 2
  assert captions.tag_to_class_id("dog", lexicon) is None
  # VOC keeps its lexicon files.
  assert captions.lexicon_for(classes.VOC) is captions.load_lexicon()


def test_data_prepared_with_other_classes_is_refused(tmp_path):
  from dis_tf.data import voc  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "prepared"
  folder.mkdir()
  _write(folder, GOOD)
  voc.check_folder_classes(str(folder),
                           classes.load_class_set(folder / "classes.txt"))
  with pytest.raises(errors.UserError) as e:
    voc.check_folder_classes(str(folder), classes.VOC)
  assert "4 classes (background, crack, rust, paint)" in str(e.value)
  assert "21 classes (background, aeroplane" in str(e.value)


def test_resume_with_another_class_set_is_refused_naming_both(tmp_path):
  from dis_tf import training  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "run")
  voc_config = config_lib.resolve_config("tiny", {"model_dir": model_dir})
  weights = model_dir_lib.phase_weights_path(model_dir, "a")
  os.makedirs(os.path.dirname(weights))
  open(weights, "w").close()
  model_dir_lib.write_fingerprint(model_dir, voc_config, "a")
  mine = config_lib.resolve_config("tiny", {
      "model_dir": model_dir, "data.classes": _write(tmp_path, GOOD)})
  with pytest.raises(model_dir_lib.ConfigMismatchError) as e:
    training._check_fingerprints(mine, model_dir, ["a"], None)  # pylint: disable=protected-access
  message = str(e.value)
  assert "class_set.names: ['background', 'aeroplane'" in message
  assert "['background', 'crack', 'rust', 'paint'] now" in message


def test_figures_and_tensorboard_grid_take_the_class_colours():
  from dis_tf import visualization  # pylint: disable=g-import-not-at-top
  class_set = classes.ClassSet(names=("background", "crack"),
                               colors=((1, 2, 3), (250, 10, 20)),
                               synonyms=((), ()))
  labelmap = np.ones((8, 8), np.int64)
  row = {"image": np.zeros((8, 8, 3), np.uint8),
         "image_target": np.zeros((8, 8, 3), np.uint8),
         "reconstruction": np.zeros((8, 8, 3), np.uint8),
         "labelmaps": {0: labelmap}, "ground_truth": labelmap,
         "file_name": "a.jpg"}
  grid = visualization.grid_image([row], panel_size=8,
                                  palette=class_set.palette())
  colours = {tuple(c) for c in grid.reshape(-1, 3).tolist()}
  assert (250, 10, 20) in colours
  assert tuple(classes.voc_palette()[1]) not in colours


def test_client_writes_the_served_names_in_the_class_file_colours(
    tmp_path, monkeypatch):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from dis_tf.serving import client as client_lib  # pylint: disable=g-import-not-at-top
  class_set = classes.load_class_set(_write(tmp_path, GOOD))
  image = tmp_path / "a.png"
  Image.new("RGB", (3, 2)).save(image)
  outputs = {
      "class_ids": np.array([[[0, 1, 1], [2, 3, 0]]], np.int32),
      "height": np.array([2]), "width": np.array([3]),
      "tag_probabilities": np.array([[1.0, 0.9, 0.1, 0.8]], np.float32),
      "class_names": np.array([[n.encode() for n in class_set.names]])}
  monkeypatch.setattr(client_lib, "rest_predict",
                      lambda *args, **kwargs: outputs)
  (path,) = client_lib.run([str(image)], "http://localhost:8501",
                           output_dir=str(tmp_path / "out"),
                           class_set=class_set)
  assert Image.open(path).getpalette()[3:6] == [255, 0, 0]
  record = (tmp_path / "out/predictions.jsonl").read_text()
  assert '"tags": ["crack", "paint"]' in record
  with pytest.raises(errors.UserError, match="--classes names 21 classes"):
    client_lib.run([str(image)], "http://localhost:8501",
                   output_dir=str(tmp_path / "out2"),
                   class_set=classes.VOC)
