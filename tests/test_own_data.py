"""The README's own-data commands, run as written on 5 classes not VOC's."""

import json
import os
import re
import subprocess
import time

import numpy as np
from PIL import Image
import pytest

from dis_tf import classes
from dis_tf.data import synthetic_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- own-data commands:"
CLASS_SET = classes.ClassSet(
    names=("background", "crack", "rust", "paint", "weld"),
    colors=((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200),
            (245, 130, 48)),
    synonyms=((), ("fissure",), ("corrosion",), (), ()))


def readme_commands():
  """The lines of the fenced block after MARKER in README.md."""
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  block = re.search(re.escape(MARKER) + r".*?\n```bash\n(.*?)\n```", text,
                    re.S)
  assert block, f"README.md has no {MARKER!r} block"
  return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_block_is_the_whole_path():
  tools = [line.split()[1] for line in readme_commands()]
  assert tools == ["tools/prepare_data.py", "tools/train.py",
                   "tools/evaluate.py", "tools/clean_tags.py",
                   "export/export_saved_model.py", "tools/predict.py"]


@pytest.mark.slow
def test_readme_own_data_commands_on_five_new_classes(tmp_path):
  synthetic_folder.write_plain_folder(str(tmp_path / "my_data"), CLASS_SET,
                                      num_labelled=24, num_weak=40,
                                      image_size=64)
  # The commands name tools/ and export/ relative to the repository root.
  for top in ("tools", "export"):
    os.symlink(os.path.join(REPO, top), tmp_path / top)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
             CUDA_VISIBLE_DEVICES="")
  times = {}
  for line in readme_commands():
    start = time.time()
    proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    times[line.split()[1]] = round(time.time() - start, 1)
    assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
  print(times)
  names = list(CLASS_SET.names)
  # The eval report names the classes.
  table = (tmp_path / "runs/mine/eval_val/table3.md").read_text()
  assert all(name in table for name in names[1:]), table
  # Tag cleaning writes their names.
  cleaned = json.loads((tmp_path / "runs/mine/clean_tags/cleaned_tags.jsonl")
                       .read_text().splitlines()[0])
  assert set(cleaned["given_tag_names"]) <= set(names[1:])
  # predictions.jsonl: tags named by class.
  records = [json.loads(line) for line in
             (tmp_path / "predictions/predictions.jsonl").read_text()
             .splitlines()]
  assert len(records) == 40
  assert list(records[0]["tag_probabilities"]) == names[1:]
  assert set(records[0]["classes"]) <= set(names)
  # The export's metadata: names and colours.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  meta = tf.saved_model.load(str(tmp_path / "runs/mine_export/1")
                             ).signatures["metadata"]()
  assert [n.decode() for n in meta["class_names"].numpy()] == names
  assert meta["class_colors"].numpy().tolist() == [
      list(c) for c in CLASS_SET.colors]
  # The labelmap PNGs carry the class colours.
  labelmap = Image.open(tmp_path / "predictions" /
                        records[0]["labelmap"])
  assert labelmap.mode == "P"
  assert labelmap.getpalette()[:15] == np.ravel(CLASS_SET.colors).tolist()
