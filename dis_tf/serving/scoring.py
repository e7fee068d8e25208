"""Scoring a served model on a VOC-layout folder, as a client sees it.

The image files are sent as encoded bytes (what a TF Serving client sends)
and the returned `class_ids` are compared with the mask PNGs of the folder:
nothing of `dis_tf.evaluation` is on this path, so it checks that what is
served scores what evaluation says it scores (the demo prints both).
"""

import os

import numpy as np
from PIL import Image

from dis_tf import metrics as dis_metrics


def score_voc_files(predict_bytes, voc_root, names, num_classes,
                    batch_size=8):
  """mIoU of a serving function on the images `names` of a VOC folder.

  Args:
    predict_bytes: fn(list of encoded images) -> dict with "class_ids"
      [B, Hmax, Wmax], "height" [B], "width" [B] (a loaded SavedModel's
      `serving_default`, or `predict_in_process` of the serving module).
    voc_root: the VOC2012 folder (JPEGImages/, SegmentationClass/).
    names: image ids (no extension).
    num_classes: classes.
    batch_size: images per call.

  Returns:
    The mIoU (fraction) over all images.
  """
  matrix = dis_metrics.ConfusionMatrix(num_classes)
  for start in range(0, len(names), batch_size):
    batch = names[start:start + batch_size]
    encoded = []
    for name in batch:
      with open(os.path.join(voc_root, "JPEGImages", name + ".jpg"), "rb") as f:
        encoded.append(f.read())
    out = predict_bytes(encoded)
    for i, name in enumerate(batch):
      height, width = int(out["height"][i]), int(out["width"][i])
      mask = np.asarray(Image.open(os.path.join(
          voc_root, "SegmentationClass", name + ".png")))
      matrix.update(mask, np.asarray(out["class_ids"][i])[:height, :width])
  return matrix.mean_iou()
