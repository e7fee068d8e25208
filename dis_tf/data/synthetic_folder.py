"""A synthetic dataset with a class set of your choice, as a plain folder.

`write_plain_folder` draws images with `synthetic.generate_image` (object
class i has its own colour and texture) for any class set, and writes them
in the layout tools/prepare_data.py reads (dis_tf/data/folder.py):
classes.txt, labelled/images + labelled/masks, weak/ images with
captions.tsv or tags.jsonl. The masks rotate through the three accepted
formats (palette PNG, 8-bit gray, RGB in the class colours), the images
through JPEG and PNG, so a run of prepare_data on it reads them all.
`tools/make_synthetic.py --classes=...` writes one; the tests run the
README's own-data commands on one.
"""

import json
import os

import numpy as np
from PIL import Image

from dis_tf import classes
from dis_tf.data import synthetic
from dis_tf.data import voc

_TEMPLATES = ("a photo of {}", "{} in the picture", "close up of {}")


def _caption(rng, names):
  items = []
  for name in rng.permutation(np.asarray(names)).tolist():
    article = "an" if name[0] in "aeiou" else "a"
    items.append(f"{article} {name.replace('_', ' ')}")
  return str(rng.choice(_TEMPLATES)).format(" and ".join(items))


def write_plain_folder(out_dir, class_set, num_labelled=24, num_weak=40,
                       image_size=64, seed=0, index="captions"):
  """Writes a synthetic dataset of `class_set` in the plain-folder layout.

  Args:
    out_dir: the folder to write (created).
    class_set: a `dis_tf.classes.ClassSet` (at least 2 classes).
    num_labelled: images with a mask.
    num_weak: images with image-level labels only.
    image_size: side of the square images.
    seed: random seed.
    index: "captions" (weak/captions.tsv, captions naming the classes) or
      "tags" (weak/tags.jsonl).

  Returns:
    `out_dir`.
  """
  rng = np.random.default_rng(seed)
  for sub in ("labelled/images", "labelled/masks", "weak"):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  classes.write_class_set(class_set, os.path.join(out_dir, "classes.txt"))
  palette = class_set.palette()
  n = class_set.num_classes
  for i in range(num_labelled):
    image, mask = synthetic.generate_image(rng, image_size, image_size,
                                           num_classes=n)
    name = f"img_{i:04d}"
    image_path = os.path.join(out_dir, "labelled", "images", name)
    if i % 2 == 0:
      Image.fromarray(image).save(image_path + ".jpg", quality=95)
    else:
      Image.fromarray(image).save(image_path + ".png")
    mask = synthetic.add_boundary(mask)
    mask_path = os.path.join(out_dir, "labelled", "masks", name + ".png")
    kind = i % 3
    if kind == 0:
      voc.write_label_png(mask_path, mask, class_set)
    elif kind == 1:
      Image.fromarray(mask, mode="L").save(mask_path)
    else:
      Image.fromarray(palette[mask]).save(mask_path)
  lines = []
  for i in range(num_weak):
    image, mask = synthetic.generate_image(rng, image_size, image_size,
                                           num_classes=n)
    name = f"web_{i:04d}.jpg"
    Image.fromarray(image).save(os.path.join(out_dir, "weak", name),
                                quality=90)
    present = [class_set.names[c] for c in np.unique(mask) if c]
    if index == "captions":
      lines.append(f"{name}\t{_caption(rng, present)}")
    else:
      lines.append(json.dumps({"image": name, "tags": present}))
  index_file = "captions.tsv" if index == "captions" else "tags.jsonl"
  with open(os.path.join(out_dir, "weak", index_file), "w",
            encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return out_dir
