"""Client library of a DIS model served by TensorFlow Serving (REST or gRPC).

`rest_predict` and `grpc_predict` send encoded images to the export's
`serving_default` (or `serving_steps`, with steps) and return its outputs as
NumPy arrays; `run` adds what `export/client.py` (the command-line client)
does: read the files, print the tags and write the files of
`tools/predict.py` (`dis_tf.prediction_io`).

Transport security: a server that is not on this machine (localhost,
127.0.0.0/8, ::1) is reached over TLS: REST needs an https:// URL (a CA
bundle instead of the system's with `Connection(ca_file=...)`), gRPC uses
TLS with the system roots or `ssl_root_certs`, and `ssl_client_cert` /
`ssl_client_key` for mutual TLS. Plain http:// or an insecure gRPC channel
to another host needs `insecure=True`. `timeout` bounds the whole request
(connect, send, server time and the full response), and
`max_response_bytes` the size of the response.

Size: over 450 lines because the transport security (TLS rules, deadline,
response-size limit) of both protocols is one policy, kept in one place next to
the two request paths it guards.
"""


import base64
import dataclasses
import http.client
import ipaddress
import json
import os
import ssl
import time
from typing import Optional
import urllib.parse

import numpy as np

from dis_tf import errors
from dis_tf import prediction_io
from dis_tf.classes import voc_palette

# Signatures that take encoded images (see dis_tf/serving/module.py).
FIXED_STEPS_SIGNATURE = "serving_default"
STEPS_SIGNATURE = "serving_steps"


DEFAULT_TIMEOUT = 120.0
# Labelmaps of large images exceed gRPC's default 4 MB message limit.
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024


@dataclasses.dataclass
class Connection:
  """How the client reaches the server (the transport flags).

  Attributes:
    timeout: seconds for the whole request (connect, send, wait, receive).
    max_response_bytes: largest response accepted.
    insecure: allow plain HTTP / an insecure gRPC channel to a host that is
      not this machine.
    ca_file: REST over https: a CA bundle (PEM) instead of the system's.
    ssl_root_certs: gRPC TLS: root certificates (PEM) instead of the
      system's.
    ssl_client_cert: gRPC TLS: client certificate chain (PEM), for mutual
      TLS; needs ssl_client_key.
    ssl_client_key: gRPC TLS: the client certificate's private key (PEM).
  """

  timeout: float = DEFAULT_TIMEOUT
  max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
  insecure: bool = False
  ca_file: Optional[str] = None
  ssl_root_certs: Optional[str] = None
  ssl_client_cert: Optional[str] = None
  ssl_client_key: Optional[str] = None

  def __post_init__(self):
    if not self.timeout or not self.timeout > 0:
      raise errors.UserError(
          f"--timeout must be > 0 seconds, got {self.timeout}.")
    if not self.max_response_bytes or self.max_response_bytes < 1:
      raise errors.UserError("--max_response_bytes must be >= 1, got "
                             f"{self.max_response_bytes}.")
    if bool(self.ssl_client_cert) != bool(self.ssl_client_key):
      raise errors.UserError(
          "--ssl_client_cert and --ssl_client_key go together.")


class ServingError(errors.UserError, RuntimeError):
  """TF Serving answered with an error, or with something that is not a
  prediction. A `RuntimeError` (as before) and a `UserError`, so a tool
  prints it as one line (`error: TF Serving error: HTTP 400 Bad Request:
  ...`) and exits with status 1 instead of a traceback."""


def failure_message(error):
  """One line for a failed request, or None for an unexpected exception.

  gRPC errors become `TF Serving error: gRPC <STATUS>: <details>`; a
  timeout, a refused connection or a TLS failure keep their message with
  what failed. `ServingError`s are already one line.
  """
  if isinstance(error, ServingError):
    return errors.message(error)
  code, details = getattr(error, "code", None), getattr(error, "details",
                                                        None)
  if callable(code) and callable(details):  # grpc.RpcError (a grpc.Call).
    status = getattr(code(), "name", code())
    return f"TF Serving error: gRPC {status}: {details()}"
  if isinstance(error, TimeoutError):
    return errors.message(error)
  if isinstance(error, ssl.SSLError):
    return f"TLS connection to the server failed: {errors.message(error)}"
  if isinstance(error, ConnectionError):
    return f"cannot reach the server: {errors.message(error)}"
  return None


def is_local_host(host):
  """True for this machine: localhost, 127.0.0.0/8, ::1 (or a unix socket)."""
  host = (host or "").strip("[]").lower()
  if host in ("localhost", "localhost.") or host.startswith("unix:"):
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def _grpc_host(target):
  """The host of a gRPC target: "host:port", "[::1]:8500", "dns:///h:p"."""
  if target.startswith("unix:"):
    return target
  target = target.split("///", 1)[-1]
  if target.startswith("["):
    return target[1:target.find("]")]
  return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


def _read(path, flag):
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise errors.UserError(f"{flag}={path}: cannot read it ({e}).") from None


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
    ServingError (a RuntimeError): with the server's message if the
      response is an error, and for a response with no predictions.
  """
  if not isinstance(body, dict):
    raise ServingError(f"TF Serving response is not a JSON object: "
                       f"{str(body)[:500]}")
  if "error" in body:
    raise ServingError(f"TF Serving error: {body['error']}")
  if "outputs" in body:
    # Columnar format: {name: batch-first (nested) list}. (TF Serving gives
    # a bare list only for a one-output signature; every DIS one has more.)
    columns = body["outputs"]
    if not isinstance(columns, dict):
      raise ServingError("TF Serving response 'outputs' is not an object "
                         f"of named outputs: {str(columns)[:500]}")
    if not columns:
      raise ServingError("TF Serving returned empty 'outputs' (no result "
                         "for any image); the request sent at least one "
                         "image.")
  elif "predictions" in body:
    rows = body["predictions"]
    if not isinstance(rows, list) or not rows:
      raise ServingError(
          "TF Serving returned an empty 'predictions' list (no result for "
          "any image); the request sent at least one image.")
    columns = {key: [row[key] for row in rows] for key in rows[0]}
  else:
    raise ServingError("TF Serving response has neither 'predictions' nor "
                       f"'outputs': keys {sorted(body)}.")
  return {key: np.asarray(value) for key, value in columns.items()}


class _Deadline:
  """The time left of a request's --timeout."""

  def __init__(self, timeout):
    self.timeout = timeout
    self.end = time.monotonic() + timeout

  def left(self, what):
    left = self.end - time.monotonic()
    if left <= 0:
      raise TimeoutError(f"--timeout={self.timeout:g} s passed while {what}.")
    return left


def _http_exchange(url, data, connection):
  """POSTs `data` to `url`; (status, reason, body bytes) within the deadline.

  The socket timeout is reset to the time left before each operation, so
  --timeout bounds the whole exchange, not each read (a server trickling
  its response byte by byte cannot hold the client forever), and at most
  --max_response_bytes of body are read.
  """
  deadline = _Deadline(connection.timeout)
  parts = urllib.parse.urlsplit(url)
  if parts.scheme == "https":
    context = ssl.create_default_context(cafile=connection.ca_file)
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port, context=context,
        timeout=deadline.left("connecting"))
  else:
    conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                      timeout=deadline.left("connecting"))
  limit = connection.max_response_bytes
  try:
    conn.connect()
    # The response keeps reading from this socket after the connection
    # object lets go of it.
    sock = conn.sock
    sock.settimeout(deadline.left("sending the request"))
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("POST", path, body=data,
                 headers={"Content-Type": "application/json"})
    sock.settimeout(deadline.left("waiting for the response"))
    response = conn.getresponse()
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limit:
      raise ServingError(
          f"HTTP {response.status} {response.reason}: the response is "
          f"{int(length)} bytes, over --max_response_bytes={limit}.")
    chunks, size = [], 0
    while True:
      sock.settimeout(deadline.left("reading the response"))
      chunk = response.read1(min(1 << 16, limit + 1 - size))
      if not chunk:
        break
      chunks.append(chunk)
      size += len(chunk)
      if size > limit:
        raise ServingError(
            f"HTTP {response.status} {response.reason}: the response is "
            f"over --max_response_bytes={limit} bytes.")
    return response.status, response.reason, b"".join(chunks)
  except OSError as e:
    if isinstance(e, TimeoutError) or "timed out" in str(e):
      raise TimeoutError(f"--timeout={connection.timeout:g} s passed "
                         f"(request to {url}: {e}).") from None
    raise
  finally:
    conn.close()


def _check_rest_url(server, connection):
  parts = urllib.parse.urlsplit(server)
  if parts.scheme not in ("http", "https") or not parts.hostname:
    raise errors.UserError(f"--server={server!r}: expected an http:// or "
                           "https:// URL for --protocol=rest.")
  if connection.ca_file and parts.scheme != "https":
    raise errors.UserError(
        f"--ca_file needs an https:// --server, got {server!r}.")
  if (parts.scheme == "http" and not connection.insecure
      and not is_local_host(parts.hostname)):
    raise errors.UserError(
        f"--server={server!r}: plain HTTP to another host sends the images "
        "unencrypted; use https:// (and --ca_file for a private CA), or "
        "pass --insecure.")


def rest_predict(server, model_name, image_bytes, steps=None, version=None,
                 connection=None):
  """Sends images to TF Serving's REST API (`:predict`).

  Args:
    server: base URL, e.g. "http://localhost:8501" (https:// for TLS).
    model_name: the served model name (`--model_name` of the server).
    image_bytes: list of encoded images (bytes).
    steps: optional latent steps (uses `serving_steps`).
    version: optional model version (default: the latest).
    connection: a `Connection` (None: the defaults).

  Returns:
    Dict of NumPy arrays, the signature's outputs.

  Raises:
    ValueError: plain HTTP to another host without `insecure`.
    TimeoutError: the whole request took longer than the timeout.
    ServingError (a RuntimeError): an HTTP error (status and body), a
      response over the size limit, or no predictions.
  """
  connection = connection or Connection()
  _check_rest_url(server, connection)
  url = f"{server.rstrip('/')}/v1/models/{model_name}"
  if version is not None:
    url += f"/versions/{int(version)}"
  data = json.dumps(rest_request_body(image_bytes, steps)).encode("utf-8")
  status, reason, raw = _http_exchange(url + ":predict", data, connection)
  text = raw.decode("utf-8", errors="replace")
  try:
    body = json.loads(text)
  except ValueError:
    body = None
  if status >= 400:
    # TF Serving puts the reason (e.g. a bad image) in a JSON body; a proxy
    # in front of it may answer with HTML or plain text.
    detail = (body["error"] if isinstance(body, dict) and "error" in body
              else text[:2000] or "(empty body)")
    raise ServingError(f"TF Serving error: HTTP {status} {reason}: {detail}")
  if body is None:
    raise ServingError(f"HTTP {status} {reason}: the response is not JSON: "
                       f"{text[:500]!r}")
  return parse_rest_response(body)


def grpc_channel(server, connection=None):
  """The gRPC channel to `server` that `connection` asks for.

  TLS (`grpc.ssl_channel_credentials`) with --ssl_root_certs (else the
  system roots) and the optional client certificate, for any host that is
  not this machine unless --insecure; an insecure channel to this machine
  when no TLS flag is given, or to any host with --insecure.

  Args:
    server: "host:port".
    connection: a `Connection` (None: the defaults).

  Returns:
    A `grpc.Channel` whose received messages are limited to
    `connection.max_response_bytes`.

  Raises:
    ValueError: --insecure together with TLS flags, or an unreadable file.
  """
  import grpc  # The REST client does not need gRPC.
  connection = connection or Connection()
  options = [("grpc.max_receive_message_length",
              int(connection.max_response_bytes))]
  tls_flags = connection.ssl_root_certs or connection.ssl_client_cert
  if connection.insecure and tls_flags:
    raise errors.UserError("--insecure contradicts --ssl_root_certs / "
                           "--ssl_client_cert.")
  if tls_flags or not (connection.insecure or
                       is_local_host(_grpc_host(server))):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(_read(connection.ssl_root_certs,
                                 "--ssl_root_certs")
                           if connection.ssl_root_certs else None),
        private_key=(_read(connection.ssl_client_key, "--ssl_client_key")
                     if connection.ssl_client_key else None),
        certificate_chain=(_read(connection.ssl_client_cert,
                                 "--ssl_client_cert")
                           if connection.ssl_client_cert else None))
    return grpc.secure_channel(server, credentials, options=options)
  return grpc.insecure_channel(server, options=options)


def grpc_predict(server, model_name, image_bytes, steps=None, version=None,
                 connection=None):
  """Sends images to TF Serving's gRPC `PredictionService.Predict`.

  Args:
    server: "host:port", e.g. "localhost:8500".
    model_name: the served model name.
    image_bytes: list of encoded images (bytes).
    steps: optional latent steps (uses `serving_steps`).
    version: optional model version (default: the latest).
    connection: a `Connection` (None: the defaults); see `grpc_channel`.
      Its timeout is the call's deadline (the whole call).

  Returns:
    Dict of NumPy arrays, the signature's outputs.

  Raises:
    grpc.RpcError: from the server or the transport (DEADLINE_EXCEEDED,
      RESOURCE_EXHAUSTED for a response over the size limit, ...).
    ServingError (a RuntimeError): a response without outputs.
  """
  # Imported here: the REST client needs neither gRPC nor TensorFlow.
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
  connection = connection or Connection()
  with grpc_channel(server, connection) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=connection.timeout)
  outputs = {key: tf.make_ndarray(proto)
             for key, proto in response.outputs.items()}
  if not outputs or not len(outputs.get("class_ids", [])):
    raise ServingError("TF Serving returned no predictions (empty outputs) "
                       "for a request of at least one image.")
  return outputs


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def summarize(outputs, tag_threshold=0.5):
  """Per image: tags above the threshold and the classes in the labelmap.

  Args:
    outputs: the prediction outputs (from `rest_predict` / `grpc_predict`).
    tag_threshold: tag probability threshold.

  Returns:
    A list (one per image) of dicts {"tags": [(name, probability)],
    "labelmap_classes": [name], "quality": float or None (an export that
    predates the score)}; background is never a tag.
  """
  summaries = []
  for i, tag_probs in enumerate(outputs["tag_probabilities"]):
    names = [_text(n) for n in outputs["class_names"][i]]
    tags = [(names[c], float(p)) for c, p in enumerate(tag_probs)
            if c > 0 and p > tag_threshold]
    ids = labelmap(outputs, i)
    present = [names[c] for c in np.unique(ids) if c < len(names)]
    summaries.append({"tags": tags, "labelmap_classes": present,
                      "quality": prediction_io.output_quality(outputs, i)})
  return summaries


def labelmap(outputs, index):
  """Image `index`'s class ids cropped to its original size ([H, W])."""
  height = int(outputs["height"][index])
  width = int(outputs["width"][index])
  return np.asarray(outputs["class_ids"][index])[:height, :width]


def colorize(class_ids, palette=None):
  """[H, W] class ids -> [H, W, 3] uint8 colours of `palette` ([256, 3],
  `ClassSet.palette()`; None: VOC's)."""
  palette = voc_palette() if palette is None else np.asarray(palette)
  return palette[np.asarray(class_ids, np.int64) % 256]


def run(paths, server, protocol="rest", model_name="dis", steps=None,
        version=None, output_dir=".", tag_threshold=0.5, connection=None,
        class_set=None):
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
    connection: a `Connection` (transport security, timeout, size limit).
    class_set: the served model's `ClassSet` (its classes.txt), for the
      labelmap colours; its names must be the served ones. None: the VOC
      palette (the served names are used either way).

  Returns:
    The list of labelmap PNG paths written.
  """
  if protocol not in ("rest", "grpc"):
    raise errors.UserError(
        f"--protocol must be 'rest' or 'grpc', got {protocol!r}.")
  # Read and checked here, so that a bad file is named before any request.
  images = [prediction_io.read_image(path) for path in paths]
  predict = rest_predict if protocol == "rest" else grpc_predict
  try:
    outputs = predict(server, model_name, [image.data for image in images],
                      steps=steps, version=version, connection=connection)
  except Exception as e:  # pylint: disable=broad-except
    line = failure_message(e)
    if line is None:
      raise
    raise ServingError(line) from e
  written = []
  palette = None
  if class_set is not None:
    served = tuple(_text(n) for n in outputs["class_names"][0])
    if served != tuple(class_set.names):
      raise errors.UserError(
          f"--classes names {class_set.describe()}, but the served model's "
          f"classes are {len(served)} ({', '.join(served[:8])}"
          f"{', ...' if len(served) > 8 else ''}).")
    palette = class_set.palette()
  # The files of tools/predict.py (dis_tf.prediction_io), so that a served
  # and an in-process prediction of an image are identical files.
  with prediction_io.PredictionWriter(output_dir, tag_threshold,
                                      palette) as writer:
    for i, image in enumerate(images):
      record = writer.write(
          image.path, image.rgb, labelmap(outputs, i),
          outputs["tag_probabilities"][i], outputs["class_names"][i], steps,
          quality=prediction_io.output_quality(outputs, i))
      print(prediction_io.describe(record))
      written.append(os.path.join(output_dir, record["labelmap"]))
  return written
