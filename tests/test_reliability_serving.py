"""Serving inputs from strangers, against the exported SavedModel.

A tiny model is exported once; a separate "server" process that imports
only TensorFlow loads it the TF Serving way (`tf.compat.v1` Session +
`saved_model.loader.load`, the path of TF Serving's C++ loader) and runs
every request through `serving_default`, recording a valid result or the
`InvalidArgumentError` message, its RSS after every request, and whether it
still answers a good request afterwards. Cases: empty batch, zero-byte
input, random bytes, a truncated JPEG, a 1x1 image, a 6000x6000 image, a
decompression bomb (20000x20000 PNG of a few KB), a 16-bit PNG, a batch
mixing sizes and formats, requests over the export's bounds (batch size,
padded output pixels), GIFs (one frame; animated; a frame outside the
screen; one-byte data sub-blocks; 100 extension blocks) and BMPs
(bottom-up, top-down, a header bomb).
Then 8 threads share the Session for a bounded number of requests and
every answer must equal the single-threaded one. A last test measures the
peak RSS of the same over-bound requests against an export with small
bounds and one whose bounds allow them.

Damaged and unusual files, exactly:

* a JPEG cut in half is an error, never a partial decode (DecodeImage does
  not set `try_recover_truncated`): `jpeg::Uncompress failed. Invalid JPEG
  data or crop window.`;
* a JPEG cut inside its header (30 bytes) fails when its size is read,
  before decoding: `Invalid JPEG data, size 30`;
* a 16-bit PNG is decoded to 8 bits by keeping the high byte (v >> 8,
  not a rounded v / 257), then resized and normalised like any 8-bit image
  (checked against a NumPy reference, and served exactly like the 8-bit
  PNG of those high bytes).

Memory bound (see RELIABILITY.md): per image, the header size is checked
before decoding (<= 40 Mpixel), one image is decoded at a time (3 bytes /
pixel), the labelmap is upsampled + argmaxed in 64-row bands (64 x W x C x
4 bytes) and the class_ids output is 4 bytes / pixel of the batch's largest
image; the rest is the fixed network at the input size.
"""

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from dis_tf import image_ops
from dis_tf.serving import export_lib
from dis_tf.serving import inputs

import gif_bytes  # tests/gif_bytes.py

SIZE = 64
T_TEST = 2
MIB = 1 << 20


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _jpeg(array, quality=90):
  return tf.io.encode_jpeg(array, quality=quality).numpy()


def _gradient(h, w):
  y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
  x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
  return np.stack([y + 0 * x, x + 0 * y, (x + y) / 2], -1).astype(np.uint8)


def _bomb_png(side):
  """A valid PNG header claiming side x side pixels, with a few KB of data."""
  def chunk(kind, data):
    body = kind + data
    return (struct.pack(">I", len(data)) + body
            + struct.pack(">I", zlib.crc32(body) & 0xffffffff))
  header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
  row = b"\0" + b"\0" * (3 * side)
  compressor = zlib.compressobj(9)
  data = b"".join(compressor.compress(row) for _ in range(64))
  data += compressor.flush()
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
          + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _bmp(array, top_down=False, claim=None):
  """A 24-bit BMP (PIL); `top_down` negates the height (rows flipped),
  `claim` (side) rewrites the header's size without adding pixels."""
  buffer = io.BytesIO()
  Image.fromarray(array[::-1] if top_down else array).save(buffer, "BMP")
  data = bytearray(buffer.getvalue())
  if top_down:
    data[22:26] = struct.pack("<i", -array.shape[0])
  if claim:
    data[18:26] = struct.pack("<ii", claim, claim)
  return bytes(data)


def _sixteen_bit():
  """A 40 x 30 16-bit gray image whose low bytes are noise: v >> 8 is the
  gradient, and differs from round(v / 257) at many pixels."""
  low = np.random.RandomState(1).randint(0, 256, (40, 30))
  return (_gradient(40, 30)[..., 0].astype(np.uint16) * 256 + low).astype(
      np.uint16)


def _requests():
  rng = np.random.RandomState(0)
  good = _jpeg(_gradient(50, 70))
  one = _png(np.full((1, 1, 3), 7, np.uint8))
  full_jpeg = _jpeg(rng.randint(0, 256, (80, 60, 3)).astype(np.uint8))
  sixteen = _sixteen_bit()
  big = np.zeros((6000, 6000, 3), np.uint8)
  big[:3000, :, 0] = 255
  big[:, 3000:, 2] = 200
  return {
      # name: (list of encoded images, expected "ok" or an error regexp)
      "good": ([good], "ok"),
      "empty_batch": ([], r"Input image_bytes is an empty batch"),
      "zero_bytes": ([good, b""], r"element\] \[1\] \[is not a JPEG"),
      "random_bytes": ([bytes(rng.randint(0, 256, 1000).astype(np.uint8))],
                       r"element\] \[0\] \[is not a JPEG"),
      "truncated_jpeg": ([full_jpeg[: len(full_jpeg) // 2]],
                         r"(?m)^jpeg::Uncompress failed\. Invalid JPEG data "
                         r"or crop window\.$"),
      "jpeg_header_only": ([full_jpeg[:30]],
                           r"(?m)^Invalid JPEG data, size 30$"),
      "one_pixel": ([_png(np.full((1, 1, 3), 200, np.uint8))], "ok"),
      "png_16_bit": ([_png(sixteen)], "ok"),
      "png_16_bit_high_bytes": ([_png((sixteen >> 8).astype(np.uint8))],
                                "ok"),
      "mixed_batch": ([good, _png(_gradient(1, 1)),
                       _png(_gradient(33, 120)[..., :1].repeat(3, -1)),
                       full_jpeg, _png(np.concatenate(
                           [_gradient(20, 20), np.full((20, 20, 1), 9,
                                                       np.uint8)], -1)),
                       _png(sixteen)], "ok"),
      # The request bounds of the default export (dis_tf.config
      # ServingConfig), refused before decoding. The example: one
      # 6000 x 6000 image and 999 1x1 PNGs (about 144 GB of padded output).
      # These come before huge_6000 so that, as before, only bomb_20000
      # runs between huge_6000 and its four repeats at the end (the
      # allocator's high-water mark in test_memory_is_bounded_...).
      "issue_144_gb": ([_png(big)] + [one] * 999,
                       r"image_bytes has\] \[1000\] \[images; the limit\] "
                       r"\[--serving.max_batch_size\] \[of this export is\] "
                       r"\[32\]"),
      "padded_output_32": ([_png(big)] + [one] * 31,
                           r"image_bytes asks for\] \[32\] \[x\] \[6000\] "
                           r"\[x\] \[6000\] \[=\] \[1152000000\].*"
                           r"\[--serving.max_batch_pixels\] \[of this export "
                           r"is\] \[80000000\]"),
      "gif": ([gif_bytes.gif()], "ok"),
      "animated_gif": ([good, gif_bytes.gif(frames=3)],
                       r"element\] \[1\] \[is an animated GIF"),
      "gif_frame_outside_screen": ([gif_bytes.gif_blocks(5000, 5000)],
                                   r"element\] \[0\] \[is a GIF with a "
                                   r"frame outside its logical screen"),
      "gif_one_byte_sub_blocks": (
          [gif_bytes.gif_rechunked(gif_bytes.gif(h=60, w=70), 1)], "ok"),
      "gif_100_extensions": ([gif_bytes.gif_blocks(2, 2, extensions=100)],
                             r"element\] \[0\] \[is a GIF with more than "
                             r"64 blocks"),
      "bmp": ([_bmp(_gradient(30, 40))], "ok"),
      "bmp_top_down": ([_bmp(_gradient(30, 40), top_down=True)], "ok"),
      "bmp_bomb_20000": ([_bmp(_gradient(2, 2), claim=20000)],
                         r"element\] \[0\] \[is\] \[20000\] \[x\] "
                         r"\[20000\].*limit is\] \[40000000\]"),
      "huge_6000": ([_png(big)], "ok"),
      "bomb_20000": ([_bomb_png(20000)],
                     r"element\] \[0\] \[is\] \[20000\] \[x\] \[20000\].*"
                     r"limit is\] \[40000000"),
  }


_SERVER = textwrap.dedent(r'''
  import hashlib, json, sys, threading, time
  import numpy as np
  import psutil
  import tensorflow as tf

  path, requests_file, out_file = sys.argv[1:4]
  requests = np.load(requests_file, allow_pickle=True)["requests"].item()
  process = psutil.Process()
  rss = lambda: process.memory_info().rss
  results = {"rss_start": rss()}
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    sig = meta_graph.signature_def["serving_default"]
    fetches = {k: v.name for k, v in sig.outputs.items()}
    feed_name = sig.inputs["image_bytes"].name

    def run(images):
      return sess.run(fetches, {feed_name: np.array(images, dtype=object)})

    results["rss_loaded"] = rss()
    good = requests["good"]
    for name in list(requests) + ["huge_6000"] * 4:
      entry = {}
      try:
        out = run(requests[name])
        entry["ok"] = True
        entry["shapes"] = {k: list(v.shape) for k, v in out.items()}
        entry["finite"] = all(bool(np.isfinite(v).all()) for v in out.values()
                              if v.dtype.kind == "f")
        entry["ids"] = [int(out["class_ids"].min()) if out["class_ids"].size
                        else 0, int(out["class_ids"].max())
                        if out["class_ids"].size else 0]
        entry["class_ids_sha1"] = hashlib.sha1(
            out["class_ids"].tobytes()).hexdigest()
        entry["heights"] = out["height"].tolist()
        entry["widths"] = out["width"].tolist()
      except tf.errors.InvalidArgumentError as e:
        entry["ok"] = False
        entry["error"] = e.message[:2000]
      except Exception as e:  # any other error type is a failure
        entry["ok"] = False
        entry["other_error"] = type(e).__name__ + ": " + str(e)[:2000]
      # The process survives and still serves a good request.
      entry["next_ok"] = run(good)["class_ids"].shape[0] == 1
      entry["rss"] = rss()
      results.setdefault("order", []).append(name)
      results.setdefault("requests", {}).setdefault(name, []).append(entry)

    # Concurrency: 8 threads x bounded requests on the one Session.
    batches = [requests["good"], requests["mixed_batch"],
               requests["one_pixel"], requests["png_16_bit"]]
    reference = [run(b) for b in batches]
    mismatches, errors = [], []
    def worker(t):
      for i in range(6):
        k = (t + i) % len(batches)
        try:
          out = run(batches[k])
        except Exception as e:
          errors.append(repr(e)[:500])
          continue
        for key, value in out.items():
          if not np.array_equal(value, reference[k][key]):
            mismatches.append((t, i, key))
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    start = time.time()
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    results["concurrency"] = {
        "alive": sum(t.is_alive() for t in threads),
        "mismatches": mismatches[:20], "errors": errors[:5],
        "calls": 8 * 6, "seconds": time.time() - start}
  results["rss_end"] = rss()
  assert "dis_tf" not in sys.modules and "export" not in sys.modules
  with open(out_file, "w") as f:
    json.dump(results, f)
''')


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):
  root = tmp_path_factory.mktemp("serving")
  run_dir = str(root / "run")
  tiny_run(run_dir, crop_size=SIZE)
  path = export_lib.export_from_model_dir(
      run_dir, str(root / "models"), overrides={"latent.t_test": T_TEST})
  requests = _requests()
  requests_file = str(root / "requests.npz")
  np.savez(requests_file, requests=np.array(
      {k: v for k, (v, _) in requests.items()}, dtype=object))
  script = root / "server.py"
  script.write_text(_SERVER)
  out = str(root / "results.json")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("PYTHONPATH", None)
  proc = subprocess.run([sys.executable, str(script), path, requests_file,
                         out], env=env, cwd=str(root), capture_output=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr.decode()[-5000:]
  with open(out) as f:
    results = json.load(f)
  return {"results": results, "expected": {k: e for k, (_, e) in
                                           requests.items()},
          "requests": requests, "run_dir": run_dir, "path": path}


@pytest.mark.parametrize("name", list(_requests()))
def test_each_input_is_a_result_or_a_named_invalid_argument(served, name):
  entry = served["results"]["requests"][name][0]
  expected = served["expected"][name]
  assert "other_error" not in entry, entry
  assert entry["next_ok"], entry  # The server survives.
  # The outcome is the expected one: a success exactly when "ok" is
  # expected (an expected success that fails is a failure, whatever its
  # error text says).
  assert entry["ok"] == (expected == "ok"), (name, entry)
  if entry["ok"]:
    assert entry["finite"]
    n = len(served["requests"][name][0])
    assert entry["shapes"]["class_ids"][0] == n
    if n:  # Class ids, or 255 where a smaller image is padded.
      assert 0 <= entry["ids"][0]
      assert entry["ids"][1] < 21 or (name == "mixed_batch" and
                                      entry["ids"][1] == 255)
  else:
    assert re.search(expected, entry["error"]), (name, entry["error"])


def test_specific_results(served):
  r = served["results"]["requests"]
  assert not r["empty_batch"][0]["ok"]
  # Damaged JPEGs are errors, not partial decodes.
  assert not r["truncated_jpeg"][0]["ok"]
  assert not r["jpeg_header_only"][0]["ok"]
  assert r["one_pixel"][0]["shapes"]["class_ids"] == [1, 1, 1]
  assert r["png_16_bit"][0]["heights"] == [40]
  assert r["png_16_bit"][0]["widths"] == [30]
  # The 16-bit PNG is served exactly as the 8-bit PNG of its high bytes.
  assert (r["png_16_bit"][0]["class_ids_sha1"]
          == r["png_16_bit_high_bytes"][0]["class_ids_sha1"])
  assert r["huge_6000"][0]["shapes"]["class_ids"] == [1, 6000, 6000]
  assert r["mixed_batch"][0]["heights"] == [50, 1, 33, 80, 20, 40]
  assert r["mixed_batch"][0]["widths"] == [70, 1, 120, 60, 20, 30]
  assert r["mixed_batch"][0]["shapes"]["class_ids"] == [6, 80, 120]


def test_sixteen_bit_png_keeps_the_high_byte():
  """decode_images (the function traced into every signature) against a
  NumPy reference: 16 -> 8 bits by v >> 8, gray to RGB, then / 255 and the
  normalisation; at the network size (no resize) the match is exact."""
  sixteen = _sixteen_bit()
  images, sizes, fitted = inputs.decode_images([_png(sixteen)], 40)
  assert sizes.numpy().tolist() == [[40, 30]]
  assert fitted.numpy().tolist() == [[40, 30]]  # Long side 40, aspect kept.
  # At the network size there is no resize: compare a 30 x 30 crop.
  square = sixteen[:30]
  images, sizes, _ = inputs.decode_images([_png(square)], 30)
  assert sizes.numpy().tolist() == [[30, 30]]
  eight = np.repeat((square >> 8)[..., None], 3, -1).astype(np.float64)
  reference = ((eight / 255.0 - np.array(image_ops.MEAN_RGB))
               / np.array(image_ops.STDDEV_RGB))
  np.testing.assert_allclose(images.numpy()[0], reference, rtol=0,
                             atol=1e-5)
  rounded = np.repeat(np.round(square / 257.0)[..., None], 3, -1)
  assert (rounded != eight).mean() > 0.2  # The reference can tell them apart.


def test_memory_is_bounded_and_does_not_grow(served):
  results = served["results"]
  huge = [e["rss"] for e in results["requests"]["huge_6000"]]
  # Stated bound for a 6000 x 6000 request above the loaded server: the
  # decoded image (108 MB) + class_ids output (144 MB) + 64-row bands and
  # fetch copies; measured ~0.4 GB. The old graph (full-size float32 copy
  # and a 6000 x 6000 x 21 float32 upsampled map) needed > 3.5 GB.
  assert max(huge) - results["rss_loaded"] < 1200 * MIB, huge
  # Five identical huge requests: the allocator's high-water mark settles
  # (it grows over the first ones), then no growth.
  assert huge[4] - huge[2] < 64 * MIB, huge
  bomb = results["requests"]["bomb_20000"][0]["rss"]
  assert bomb - results["rss_loaded"] < 1200 * MIB


def test_eight_threads_agree_with_single_threaded(served):
  concurrency = served["results"]["concurrency"]
  assert concurrency["alive"] == 0, concurrency
  assert not concurrency["errors"], concurrency
  assert not concurrency["mismatches"], concurrency


def test_gif_and_bmp_are_served_at_their_size(served):
  r = served["results"]["requests"]
  for name, size in (("gif", [30, 40]), ("gif_one_byte_sub_blocks",
                                          [60, 70]),
                     ("bmp", [30, 40]), ("bmp_top_down", [30, 40])):
    assert r[name][0]["ok"], (name, r[name][0])
    assert [r[name][0]["heights"], r[name][0]["widths"]] == [
        [size[0]], [size[1]]], name


# ------------------------------------------------- memory: bound vs none
# The same two requests against two exports of the same model that differ
# only in their bounds: one with 4 Mpixel bounds (per image and per padded
# batch), and the default export (40 / 80 Mpixel), under which both requests
# are legal. Each request runs in a fresh server process; the peak RSS
# (VmHWM, reset through /proc/self/clear_refs after a warm-up request) is
# compared with the RSS before the request. The unbounded requests each get
# a fresh process (memory freed by one would hide the next one's growth);
# the bounded ones, which allocate nothing, share one. Scaled down from the
# issue's
# examples (a 6000 x 6000 image plus 999 1x1 PNGs; a 20000^2 PNG bomb) so
# that the unbounded case costs a few hundred MB and a few seconds.
SMALL_BOUND = 4_000_000

_PEAK = textwrap.dedent(r'''
  import json, os, sys, time
  import numpy as np
  import tensorflow as tf

  path, out_file, request_dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
  def status(key):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024
  def images(request_dir, prefix):
    names = sorted(n for n in os.listdir(request_dir) if n.startswith(prefix))
    return np.array([open(os.path.join(request_dir, n), "rb").read()
                     for n in names], dtype=object)
  results = {}
  with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    sig = meta_graph.signature_def["serving_default"]
    fetches = {k: v.name for k, v in sig.outputs.items()}
    feed = sig.inputs["image_bytes"].name
    for _ in range(2):  # Warm-up: kernels, thread pools, small buffers.
      sess.run(fetches, {feed: images(request_dirs[0], "warm")})
    for request_dir in request_dirs:
      result = results[os.path.basename(request_dir)] = {}
      request = images(request_dir, "request")
      before = status("VmRSS")
      with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
      start = time.time()
      try:
        out = sess.run(fetches, {feed: request})
        result["shape"] = list(out["class_ids"].shape)
        del out
      except tf.errors.InvalidArgumentError as e:
        result["error"] = e.message[:2000]
      result["seconds"] = time.time() - start
      result["growth"] = status("VmHWM") - before
  with open(out_file, "w") as f:
    json.dump(results, f)
''')


def _memory_requests():
  one = _png(np.full((1, 1, 3), 7, np.uint8))
  big = np.zeros((1000, 1000, 3), np.uint8)
  big[:500] = 200
  bomb = np.zeros((4000, 4000, 3), np.uint8)
  bomb[:, :2000, 1] = 90
  return {
      # Padded output: 32 x 1000 x 1000 = 32 Mpixel of class_ids (128 MB).
      "padded_output": [_png(big)] + [one] * 31,
      # One 4000 x 4000 PNG of ~100 KB: 48 MB decoded, 64 MB of class_ids.
      "decode_bomb": [_png(bomb)],
  }


@pytest.fixture(scope="module")
def memory_runs(served, tmp_path_factory):
  root = tmp_path_factory.mktemp("memory")
  bounded = export_lib.export_from_model_dir(
      served["run_dir"], str(root / "bounded"), overrides={
          "latent.t_test": T_TEST,
          "serving.max_image_pixels": SMALL_BOUND,
          "serving.max_batch_pixels": SMALL_BOUND})
  script = root / "peak.py"
  script.write_text(_PEAK)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("PYTHONPATH", None)
  warm = [_jpeg(_gradient(50, 70)), _png(_gradient(20, 30))]
  dirs = []
  for name, request in _memory_requests().items():
    dirs.append(root / name)
    dirs[-1].mkdir()
    for i, data in enumerate(warm):
      (dirs[-1] / f"warm{i}").write_bytes(data)
    for i, data in enumerate(request):
      (dirs[-1] / f"request{i:03d}").write_bytes(data)
  results = {}
  runs = [("bounded", bounded, dirs)] + [
      ("unbounded", served["path"], [d]) for d in dirs]
  for i, (export, path, request_dirs) in enumerate(runs):
    out = str(root / f"peak{i}.json")
    proc = subprocess.run([sys.executable, str(script), path, out]
                          + [str(d) for d in request_dirs], env=env,
                          cwd=str(root), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    with open(out) as f:
      for name, result in json.load(f).items():
        results[name, export] = result
  print({f"{k[0]}/{k[1]}": v for k, v in results.items()})
  return results


@pytest.mark.parametrize("name,bound,unbounded_mib", [
    ("padded_output", "max_batch_pixels", 128),
    ("decode_bomb", "max_image_pixels", 100),
])
def test_the_bound_is_what_holds_memory_down(memory_runs, name, bound,
                                             unbounded_mib):
  if not os.access("/proc/self/clear_refs", os.W_OK):
    pytest.skip("needs /proc/self/clear_refs to reset the peak RSS")
  bounded = memory_runs[name, "bounded"]
  unbounded = memory_runs[name, "unbounded"]
  # Bounded: refused, naming the bound, with (almost) no memory.
  assert f"--serving.{bound}] [of this export is] [{SMALL_BOUND}]" in (
      bounded["error"]) or f"(--serving.{bound})" in bounded["error"], bounded
  assert bounded["growth"] < 16 * MIB, bounded
  # The same request with a bound above it is served, and the peak grows by
  # at least the output it asks for: the bound is what holds memory down.
  assert "error" not in unbounded, unbounded
  assert unbounded["growth"] > unbounded_mib * MIB, unbounded
  assert unbounded["growth"] > 8 * bounded["growth"], (bounded, unbounded)
