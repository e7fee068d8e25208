"""Client of a DIS model served by TensorFlow Serving (REST or gRPC).

  # REST (base64 JSON), port 8501:
  python export/client.py --server=http://localhost:8501 --images=a.jpg,b.png
  # gRPC (tensorflow-serving-api PredictionServiceStub), port 8500:
  python export/client.py --server=localhost:8500 --protocol=grpc \
      --images=a.jpg --steps=10 --output_dir=/tmp/labelmaps

Prints each image's tags (classes whose tag probability exceeds
--tag_threshold) and the classes present in its labelmap, and writes the
files of `tools/predict.py` (`dis_tf.prediction_io`) into --output_dir:
`<stem>_labelmap.png` (class ids, VOC palette), `<stem>_overlay.png` and
`predictions.jsonl` ("t_test" is --steps, null without it).
With --steps the `serving_steps` signature runs that many latent steps
instead of the export's fixed t_test.
"""

import base64
import json
import os
import urllib.error
import urllib.request

from absl import flags
import numpy as np

from dis_tf import errors
from dis_tf import prediction_io
from dis_tf.classes import voc_palette

# Signatures that take encoded images (see dis_tf/serving/module.py).
FIXED_STEPS_SIGNATURE = "serving_default"
STEPS_SIGNATURE = "serving_steps"


def _signature(steps):
  return FIXED_STEPS_SIGNATURE if steps is None else STEPS_SIGNATURE


def rest_request_body(image_bytes, steps=None):
  """The JSON body of a REST predict request.

  The row ("instances") format: one object per image, the bytes
  base64-encoded as {"b64": ...}, plus its "steps" for `serving_steps`.

  Args:
    image_bytes: list of encoded images (bytes).
    steps: optional latent steps for this request (`serving_steps`).

  Returns:
    A JSON-serialisable dict.
  """
  instances = [{"image_bytes": {"b64": base64.b64encode(b).decode("ascii")}}
               for b in image_bytes]
  if steps is not None:
    for instance in instances:
      instance["steps"] = int(steps)
  return {"signature_name": _signature(steps), "instances": instances}


def parse_rest_response(body):
  """TF Serving REST JSON -> {output name: NumPy array} (batch first).

  Args:
    body: the decoded JSON response: {"predictions": [...]} (row format,
      one dict per image) or {"outputs": {...}} (columnar format).

  Returns:
    Dict of NumPy arrays.

  Raises:
    RuntimeError: with the server's message if the response is an error.
  """
  if "error" in body:
    raise RuntimeError(f"TF Serving error: {body['error']}")
  if "outputs" in body:
    columns = body["outputs"]
  else:
    rows = body["predictions"]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
  return {key: np.asarray(value) for key, value in columns.items()}


def rest_predict(server, model_name, image_bytes, steps=None, version=None,
                 timeout=120.0):
  """Sends images to TF Serving's REST API (`:predict`).

  Args:
    server: base URL, e.g. "http://localhost:8501".
    model_name: the served model name (`--model_name` of the server).
    image_bytes: list of encoded images (bytes).
    steps: optional latent steps (uses `serving_steps`).
    version: optional model version (default: the latest).
    timeout: seconds.

  Returns:
    Dict of NumPy arrays, the signature's outputs.
  """
  url = f"{server.rstrip('/')}/v1/models/{model_name}"
  if version is not None:
    url += f"/versions/{int(version)}"
  data = json.dumps(rest_request_body(image_bytes, steps)).encode("utf-8")
  request = urllib.request.Request(
      url + ":predict", data=data,
      headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      body = json.loads(response.read().decode("utf-8"))
  except urllib.error.HTTPError as e:
    # TF Serving puts the reason (e.g. a bad image) in the JSON body.
    body = json.loads(e.read().decode("utf-8") or "{}")
    if "error" not in body:
      raise
  return parse_rest_response(body)


def grpc_predict(server, model_name, image_bytes, steps=None, version=None,
                 timeout=120.0):
  """Sends images to TF Serving's gRPC `PredictionService.Predict`.

  Args:
    server: "host:port", e.g. "localhost:8500".
    model_name: the served model name.
    image_bytes: list of encoded images (bytes).
    steps: optional latent steps (uses `serving_steps`).
    version: optional model version (default: the latest).
    timeout: seconds.

  Returns:
    Dict of NumPy arrays, the signature's outputs.
  """
  # Imported here: the REST client needs neither gRPC nor TensorFlow.
  import grpc
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = _signature(steps)
  if version is not None:
    request.model_spec.version.value = int(version)
  request.inputs["image_bytes"].CopyFrom(
      tf.make_tensor_proto(list(image_bytes), dtype=tf.string))
  if steps is not None:
    request.inputs["steps"].CopyFrom(
        tf.make_tensor_proto([int(steps)] * len(image_bytes), dtype=tf.int32))
  # Labelmaps of large images exceed gRPC's default 4 MB message limit.
  options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
  with grpc.insecure_channel(server, options=options) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=timeout)
  return {key: tf.make_ndarray(proto)
          for key, proto in response.outputs.items()}


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def summarize(outputs, tag_threshold=0.5):
  """Per image: tags above the threshold and the classes in the labelmap.

  Args:
    outputs: the prediction outputs (from `rest_predict` / `grpc_predict`).
    tag_threshold: tag probability threshold.

  Returns:
    A list (one per image) of dicts {"tags": [(name, probability)],
    "labelmap_classes": [name]}; background is never a tag.
  """
  summaries = []
  for i, tag_probs in enumerate(outputs["tag_probabilities"]):
    names = [_text(n) for n in outputs["class_names"][i]]
    tags = [(names[c], float(p)) for c, p in enumerate(tag_probs)
            if c > 0 and p > tag_threshold]
    ids = labelmap(outputs, i)
    present = [names[c] for c in np.unique(ids) if c < len(names)]
    summaries.append({"tags": tags, "labelmap_classes": present})
  return summaries


def labelmap(outputs, index):
  """Image `index`'s class ids cropped to its original size ([H, W])."""
  height = int(outputs["height"][index])
  width = int(outputs["width"][index])
  return np.asarray(outputs["class_ids"][index])[:height, :width]


def colorize(class_ids):
  """[H, W] class ids -> [H, W, 3] uint8 VOC colours."""
  return voc_palette()[np.asarray(class_ids, np.int64) % 256]


def run(paths, server, protocol="rest", model_name="dis", steps=None,
        version=None, output_dir=".", tag_threshold=0.5):
  """Predicts `paths`, prints tags and writes the prediction files.

  Args:
    paths: image files.
    server: REST base URL or gRPC host:port.
    protocol: "rest" or "grpc".
    model_name: the served model name.
    steps: optional latent steps per request.
    version: optional model version.
    output_dir: where the output files go (`dis_tf.prediction_io`).
    tag_threshold: tag probability threshold of the printed and written
      tags.

  Returns:
    The list of labelmap PNG paths written.
  """
  if protocol not in ("rest", "grpc"):
    raise errors.UserError(
        f"--protocol must be 'rest' or 'grpc', got {protocol!r}.")
  # Read and checked here, so that a bad file is named before any request.
  images = [prediction_io.read_image(path) for path in paths]
  predict = rest_predict if protocol == "rest" else grpc_predict
  outputs = predict(server, model_name, [image.data for image in images],
                    steps=steps, version=version)
  written = []
  # The files of tools/predict.py (dis_tf.prediction_io), so that a served
  # and an in-process prediction of an image are identical files.
  with prediction_io.PredictionWriter(output_dir, tag_threshold) as writer:
    for i, image in enumerate(images):
      record = writer.write(
          image.path, image.rgb, labelmap(outputs, i),
          outputs["tag_probabilities"][i], outputs["class_names"][i], steps)
      print(prediction_io.describe(record))
      written.append(os.path.join(output_dir, record["labelmap"]))
  return written


def main(argv):
  del argv
  f = flags.FLAGS
  run(f.images, f.server, protocol=f.protocol, model_name=f.model_name,
      steps=f.steps, version=f.version, output_dir=f.output_dir,
      tag_threshold=f.tag_threshold)


def _define_flags():
  # Defined only when run as a script: tests import this module.
  flags.DEFINE_list("images", None, "Comma-separated image files.")
  flags.DEFINE_string("server", "http://localhost:8501",
                      "REST base URL (--protocol=rest) or gRPC host:port "
                      "(--protocol=grpc, e.g. localhost:8500).")
  flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "Transport.")
  flags.DEFINE_string("model_name", "dis", "Served model name.")
  flags.DEFINE_integer("steps", None,
                       "Latent steps for this request (serving_steps); "
                       "default: the export's t_test (serving_default).")
  flags.DEFINE_integer("version", None, "Model version (default: latest).")
  flags.DEFINE_string("output_dir", ".", "Where the labelmaps, overlays and "
                      "predictions.jsonl are written.")
  flags.DEFINE_float("tag_threshold", 0.5, "Printed-tag threshold.")
  flags.mark_flags_as_required(["images"])


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
