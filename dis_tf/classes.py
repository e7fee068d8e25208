"""Class names and the VOC colour palette shared by data, tools and export."""

import numpy as np

# Index 0 is background; indices 1..20 are the 20 VOC object classes. The
# order is the official VOC 2012 one, so class ids match VOC masks.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_VOC_CLASSES = len(VOC_CLASSES)
IGNORE_LABEL = 255


def voc_palette(num_colors=256):
  """Returns the standard VOC colour map (bit-interleaved), uint8 [N, 3].

  Index 255 (ignore) gets (224, 224, 192), as in the VOC devkit.

  Args:
    num_colors: number of palette entries.

  Returns:
    A uint8 NumPy array of shape [num_colors, 3].
  """
  palette = np.zeros((num_colors, 3), dtype=np.uint8)
  for index in range(num_colors):
    c, r, g, b = index, 0, 0, 0
    for shift in range(7, -1, -1):
      r |= ((c >> 0) & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    palette[index] = (r, g, b)
  return palette
