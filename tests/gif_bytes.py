"""Hand-made GIF bytes for the serving tests: the cases of the header walk
(dis_tf/serving/inputs.py) that PIL does not write, shared by
test_serving_check_order.py (eager) and test_reliability_serving.py
(through the export)."""

import io
import struct

import numpy as np
from PIL import Image


def gif(frames=1, h=30, w=40):
  """A GIF of `frames` frames (PIL; each frame a different grey)."""
  images = [Image.fromarray(np.full((h, w, 3), 40 * i % 256, np.uint8))
            for i in range(frames)]
  buffer = io.BytesIO()
  images[0].save(buffer, format="GIF", save_all=frames > 1,
                 append_images=images[1:])
  return buffer.getvalue()


def sub_blocks(data, block):
  """GIF data sub-blocks of `block` bytes, with the 0 terminator."""
  return b"".join(bytes([len(data[i:i + block])]) + data[i:i + block]
                  for i in range(0, len(data), block)) + b"\0"


def gif_blocks(frame_w, frame_h, screen=(2, 2), extensions=0):
  """A hand-made one-frame GIF: a `screen` (w, h) logical screen, then
  `extensions` comment extensions, then a frame_w x frame_h frame."""
  return (b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0)
          + b"\0\0\0\xff\xff\xff"  # 2-colour global table
          + b"\x21\xfe\x01c\x00" * extensions
          + b"\x2c" + struct.pack("<HHHHB", 0, 0, frame_w, frame_h, 0)
          + b"\x02" + sub_blocks(bytes([0x04, 0x01, 0x00]) * 100, 255)
          + b"\x3b")


def gif_rechunked(gif, block):
  """`gif` (PIL) with its data re-cut into `block`-byte sub-blocks: the
  same image, with sub-block chains the walk must follow to their end."""
  pos = 13 + (3 << ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
  out = [gif[:pos]]
  while gif[pos] != 0x3B:
    if gif[pos] == 0x2C:
      flags = gif[pos + 9]
      head = 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    else:
      head = 2
    out.append(gif[pos:pos + head])
    pos += head
    data = b""
    while gif[pos]:
      data += gif[pos + 1:pos + 1 + gif[pos]]
      pos += gif[pos] + 1
    pos += 1
    out.append(sub_blocks(data, block))
  return b"".join(out) + b"\x3b"
