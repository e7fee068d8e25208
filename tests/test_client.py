"""export/client.py transport: TLS, --insecure, --timeout, response size,
HTTP errors and empty predictions, against local fakes of TF Serving.

No model is needed: the fakes answer with canned responses. REST fakes are
`http.server` servers in a thread (plain, or TLS with a self-signed
certificate made here with `cryptography`); the gRPC fake is an in-process
`grpc.server` with a `PredictionService` servicer, plain or TLS (with and
without a required client certificate).
"""

from concurrent import futures
import datetime
import http.server
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from dis_tf import errors
from dis_tf.serving import client as client_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMAGES = [b"\x89PNG fake"]
OUTPUTS = {
    "class_ids": np.zeros((1, 2, 3), np.int32),
    "height": np.array([2], np.int32), "width": np.array([3], np.int32),
    "tag_probabilities": np.full((1, 21), 0.1, np.float32),
    "class_names": np.array([[b"background"] * 21]),
}


def _row_body():
  row = {k: v[0].tolist() for k, v in OUTPUTS.items()
         if k != "class_names"}
  row["class_names"] = ["background"] * 21
  return json.dumps({"predictions": [row]}).encode()


# -------------------------------------------------------------- certificates
def _cert(tmp_path, name, issuer=None, ca=False):
  """(cert path, key path, cert, key): for localhost / 127.0.0.1, signed by
  `issuer` (cert, key) or self-signed."""
  key = ec.generate_private_key(ec.SECP256R1())
  subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
  issuer_cert, issuer_key = issuer or (None, key)
  now = datetime.datetime.now(datetime.timezone.utc)
  builder = (x509.CertificateBuilder()
             .subject_name(subject)
             .issuer_name(issuer_cert.subject if issuer_cert else subject)
             .public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                            critical=True))
  if not ca:
    builder = builder.add_extension(x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
  cert = builder.sign(issuer_key, hashes.SHA256())
  cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
  cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
  key_path.write_bytes(key.private_bytes(
      serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
      serialization.NoEncryption()))
  return str(cert_path), str(key_path), cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
  """A CA, a server certificate and a client certificate it signed."""
  root = tmp_path_factory.mktemp("pki")
  ca = _cert(root, "ca", ca=True)
  server = _cert(root, "server", issuer=ca[2:])
  client = _cert(root, "client", issuer=ca[2:])
  return {"ca": ca[0], "server": server[:2], "client": client[:2]}


# ----------------------------------------------------------------- REST fake
class _Handler(http.server.BaseHTTPRequestHandler):
  """Answers every POST with `reply(handler)` -> (status, type, body) or
  runs it as a custom writer."""

  reply = None

  def do_POST(self):
    self.rfile.read(int(self.headers["Content-Length"]))
    status, kind, body = type(self).reply(self)
    if status is None:
      return  # The reply wrote the response itself.
    self.send_response(status)
    self.send_header("Content-Type", kind)
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@pytest.fixture()
def rest_server():
  """`rest_server(reply, tls=None)` -> base URL of a fake on 127.0.0.1."""
  servers = []

  def start(reply, tls=None):
    handler = type("Handler", (_Handler,), {"reply": staticmethod(reply)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    scheme = "http"
    if tls:
      context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
      context.load_cert_chain(*tls)
      server.socket = context.wrap_socket(server.socket, server_side=True)
      scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return f"{scheme}://127.0.0.1:{server.server_port}"

  yield start
  for server in servers:
    server.shutdown()
    server.server_close()


def _ok(handler):
  del handler
  return 200, "application/json", _row_body()


def test_rest_parses_a_good_response(rest_server):
  out = client_lib.rest_predict(rest_server(_ok), "dis", IMAGES)
  assert out["class_ids"].shape == (1, 2, 3)


def test_rest_parses_the_columnar_outputs_format(rest_server):
  """{"outputs": {name: batch-first list}} (TF Serving's columnar
  format): two images with different values, each output back as the
  batch-first array it was, strings included."""
  rng = np.random.RandomState(0)
  columns = {
      "class_ids": rng.randint(0, 21, (2, 2, 3)).astype(np.int32),
      "height": np.array([2, 1], np.int32),
      "width": np.array([3, 2], np.int32),
      "tag_probabilities": rng.rand(2, 21).astype(np.float32),
  }
  names = [["background"] + [f"c{i}" for i in range(1, 21)],
           ["background"] + [f"d{i}" for i in range(1, 21)]]
  body = {"outputs": dict({k: v.tolist() for k, v in columns.items()},
                          class_names=names)}
  url = rest_server(lambda handler: (200, "application/json",
                                     json.dumps(body).encode()))
  out = client_lib.rest_predict(url, "dis", IMAGES * 2)
  assert set(out) == set(columns) | {"class_names"}
  for key, value in columns.items():
    np.testing.assert_allclose(out[key], value, rtol=1e-6, err_msg=key)
    assert out[key].shape == value.shape
  assert out["class_names"].tolist() == names
  np.testing.assert_array_equal(client_lib.labelmap(out, 1),
                                columns["class_ids"][1, :1, :2])
  # The row format of the same outputs gives the same arrays.
  rows = [{k: v[i] for k, v in body["outputs"].items()} for i in range(2)]
  row_out = client_lib.parse_rest_response({"predictions": rows})
  for key in out:
    np.testing.assert_array_equal(row_out[key], out[key])


def test_rest_tls_with_ca_file(rest_server, pki):
  url = rest_server(_ok, tls=pki["server"])
  assert url.startswith("https://")
  connection = client_lib.Connection(ca_file=pki["ca"])
  out = client_lib.rest_predict(url, "dis", IMAGES, connection=connection)
  assert out["height"].tolist() == [2]
  # Without --ca_file the system roots do not know the test CA.
  with pytest.raises(ssl.SSLCertVerificationError):
    client_lib.rest_predict(url, "dis", IMAGES)
  with pytest.raises(ValueError, match="--ca_file needs an https://"):
    client_lib.rest_predict(url.replace("https", "http"), "dis", IMAGES,
                            connection=connection)


def test_plain_http_to_another_host_needs_insecure(monkeypatch):
  calls = []
  monkeypatch.setattr(client_lib, "_http_exchange",
                      lambda *args: calls.append(args) or (200, "OK",
                                                           _row_body()))
  with pytest.raises(ValueError, match=r"plain HTTP to another host .*"
                     r"--insecure"):
    client_lib.rest_predict("http://models.example.com:8501", "dis", IMAGES)
  assert not calls  # Refused before connecting.
  for url in ("http://localhost:8501", "http://127.0.0.1:8501",
              "http://[::1]:8501"):
    client_lib.rest_predict(url, "dis", IMAGES)
  client_lib.rest_predict("http://models.example.com:8501", "dis", IMAGES,
                          connection=client_lib.Connection(insecure=True))
  client_lib.rest_predict("https://models.example.com:8501", "dis", IMAGES)
  assert len(calls) == 5


def test_rest_timeout_covers_the_whole_request(rest_server):
  def trickle(handler):
    # Headers at once, then one byte every 0.1 s for 6 s: each read is
    # fast, so a per-read socket timeout never fires.
    body = b" " * 60
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
      for byte in body:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.1)
    except OSError:
      pass  # The client hung up.
    return None, None, None

  url = rest_server(trickle)
  # No wall-clock assertion (timings belong in bench/): a client whose
  # timeout were per read would read the whole 6 s body and then fail
  # otherwise (it is not JSON), never with this TimeoutError.
  with pytest.raises(TimeoutError, match=r"--timeout=1 s"):
    client_lib.rest_predict(url, "dis", IMAGES,
                            connection=client_lib.Connection(timeout=1.0))


def test_rest_response_size_limit(rest_server):
  url = rest_server(_ok)
  size = len(_row_body())
  # Refused from its Content-Length, before the body is read.
  with pytest.raises(RuntimeError, match=rf"the response is {size} bytes, "
                     r"over --max_response_bytes=100\."):
    client_lib.rest_predict(
        url, "dis", IMAGES,
        connection=client_lib.Connection(max_response_bytes=100))
  client_lib.rest_predict(url, "dis", IMAGES,
                          connection=client_lib.Connection(
                              max_response_bytes=size))

  def no_length(handler):  # Chunked: no Content-Length to check up front.
    handler.protocol_version = "HTTP/1.1"
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.send_header("Connection", "close")
    handler.end_headers()
    body = _row_body()
    for i in range(0, len(body), 50):
      part = body[i:i + 50]
      handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
    handler.wfile.write(b"0\r\n\r\n")
    return None, None, None

  with pytest.raises(RuntimeError, match=r"over --max_response_bytes=100 "):
    client_lib.rest_predict(
        rest_server(no_length), "dis", IMAGES,
        connection=client_lib.Connection(max_response_bytes=100))


@pytest.mark.parametrize("status,kind,body,match", [
    (502, "text/html", b"<html>Bad Gateway from the proxy</html>",
     r"HTTP 502 Bad Gateway: <html>Bad Gateway from the proxy</html>"),
    (503, "text/plain", b"", r"HTTP 503 Service Unavailable: \(empty body\)"),
    (400, "application/json",
     json.dumps({"error": "Input image_bytes element [0] ..."}).encode(),
     r"HTTP 400 Bad Request: Input image_bytes element \[0\]"),
    (404, "application/json", b'{"detail": "no model"}',
     r'HTTP 404 Not Found: {"detail": "no model"}'),
])
def test_rest_http_error_shows_status_and_body(rest_server, status, kind,
                                               body, match):
  url = rest_server(lambda handler: (status, kind, body))
  with pytest.raises(RuntimeError, match=match):
    client_lib.rest_predict(url, "dis", IMAGES)


@pytest.mark.parametrize("body,match", [
    (b'{"predictions": []}', r"empty 'predictions' list"),
    (b'{"something": 1}', r"neither 'predictions' nor 'outputs'"),
    (b'{"outputs": {}}', r"empty 'outputs'"),
    (b'{"outputs": [1, 2]}', r"'outputs' is not an object"),
    (b"not json", r"not JSON"),
])
def test_rest_empty_or_odd_predictions_are_clear_errors(rest_server, body,
                                                        match):
  url = rest_server(lambda handler: (200, "application/json", body))
  with pytest.raises(RuntimeError, match=match):
    client_lib.rest_predict(url, "dis", IMAGES)


# ----------------------------------------------------------------- gRPC fake
class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):

  outputs = OUTPUTS
  delay = 0.0

  def Predict(self, request, context):
    time.sleep(self.delay)
    response = predict_pb2.PredictResponse()
    for key, value in self.outputs.items():
      response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


@pytest.fixture()
def grpc_server():
  """`grpc_server(servicer, tls=None, client_ca=None)` -> port."""
  servers = []

  def start(servicer, tls=None, client_ca=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        servicer, server)
    if tls:
      pairs = [tuple(open(p, "rb").read() for p in (tls[1], tls[0]))]
      credentials = grpc.ssl_server_credentials(
          pairs, root_certificates=(open(client_ca, "rb").read()
                                    if client_ca else None),
          require_client_auth=bool(client_ca))
      port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
      port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servers.append(server)
    return port

  yield start
  for server in servers:
    server.stop(None)


def test_grpc_tls_and_mutual_tls(grpc_server, pki):
  port = grpc_server(_Servicer(), tls=pki["server"])
  target = f"localhost:{port}"
  connection = client_lib.Connection(ssl_root_certs=pki["ca"], timeout=10)
  out = client_lib.grpc_predict(target, "dis", IMAGES, connection=connection)
  assert out["class_ids"].shape == (1, 2, 3)
  # A localhost target without TLS flags gets a plain channel, which a TLS
  # server does not answer.
  with pytest.raises(grpc.RpcError) as error:
    client_lib.grpc_predict(target, "dis", IMAGES,
                            connection=client_lib.Connection(timeout=3))
  assert error.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.DEADLINE_EXCEEDED)

  # Mutual TLS: the server requires a certificate signed by the CA.
  port = grpc_server(_Servicer(), tls=pki["server"], client_ca=pki["ca"])
  target = f"localhost:{port}"
  with pytest.raises(grpc.RpcError):
    client_lib.grpc_predict(target, "dis", IMAGES, connection=connection)
  mutual = client_lib.Connection(
      ssl_root_certs=pki["ca"], ssl_client_cert=pki["client"][0],
      ssl_client_key=pki["client"][1], timeout=10)
  out = client_lib.grpc_predict(target, "dis", IMAGES, connection=mutual)
  assert out["height"].tolist() == [2]


def test_grpc_channel_is_tls_unless_local_or_insecure(monkeypatch, pki):
  made = []
  monkeypatch.setattr(grpc, "secure_channel",
                      lambda target, creds, options: made.append(
                          ("tls", target, dict(options))))
  monkeypatch.setattr(grpc, "insecure_channel",
                      lambda target, options: made.append(
                          ("plain", target, dict(options))))
  limit = client_lib.Connection(max_response_bytes=12345)
  for target in ("models.example.com:8500", "10.1.2.3:8500",
                 "dns:///models.example.com:8500"):
    client_lib.grpc_channel(target, limit)
  for target in ("localhost:8500", "127.0.0.1:8500", "[::1]:8500"):
    client_lib.grpc_channel(target, limit)
  client_lib.grpc_channel("models.example.com:8500",
                          client_lib.Connection(insecure=True))
  client_lib.grpc_channel("localhost:8500",
                          client_lib.Connection(ssl_root_certs=pki["ca"]))
  assert [kind for kind, _, _ in made] == ["tls"] * 3 + ["plain"] * 4 + [
      "tls"]
  assert made[0][2]["grpc.max_receive_message_length"] == 12345
  with pytest.raises(ValueError, match="--insecure contradicts"):
    client_lib.grpc_channel("h:1", client_lib.Connection(
        insecure=True, ssl_root_certs=pki["ca"]))
  with pytest.raises(ValueError, match="go together"):
    client_lib.Connection(ssl_client_cert=pki["client"][0])
  with pytest.raises(ValueError, match="--ssl_root_certs=/nonexistent"):
    client_lib.grpc_channel("h:1", client_lib.Connection(
        ssl_root_certs="/nonexistent"))


def test_grpc_timeout_and_response_size_limit(grpc_server):
  slow = _Servicer()
  slow.delay = 3.0
  target = f"127.0.0.1:{grpc_server(slow)}"
  # Without the deadline the call would succeed after 3 s: the status
  # alone shows the deadline held (no wall-clock assertion).
  with pytest.raises(grpc.RpcError) as error:
    client_lib.grpc_predict(target, "dis", IMAGES,
                            connection=client_lib.Connection(timeout=0.5))
  assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

  target = f"127.0.0.1:{grpc_server(_Servicer())}"
  with pytest.raises(grpc.RpcError) as error:
    client_lib.grpc_predict(
        target, "dis", IMAGES,
        connection=client_lib.Connection(max_response_bytes=100))
  assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_empty_outputs_are_a_clear_error(grpc_server):
  empty = _Servicer()
  empty.outputs = {}
  target = f"127.0.0.1:{grpc_server(empty)}"
  with pytest.raises(RuntimeError, match="no predictions"):
    client_lib.grpc_predict(target, "dis", IMAGES)


# ------------------------------------------------- errors a user can read
def test_client_tool_prints_a_server_error_as_one_line(rest_server,
                                                      tmp_path, tool_env):
  """export/client.py against a server answering HTTP 400 with TF Serving's
  JSON error: one `error:` line with the status and the message, exit
  status 1, no traceback, nothing written."""
  image = tmp_path / "a.png"
  image.write_bytes(tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)).numpy())
  body = json.dumps({"error": "Input image_bytes element [0] is not a "
                              "JPEG, PNG, GIF or BMP image."}).encode()
  url = rest_server(lambda handler: (400, "application/json", body))
  proc = subprocess.run(
      [sys.executable, "export/client.py", f"--images={image}",
       f"--server={url}", f"--output_dir={tmp_path / 'out'}"],
      cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines == [
      "error: TF Serving error: HTTP 400 Bad Request: Input image_bytes "
      "element [0] is not a JPEG, PNG, GIF or BMP image."], proc.stderr
  assert not (tmp_path / "out").exists() or not list(
      (tmp_path / "out").iterdir())


class _Refusing(_Servicer):

  def Predict(self, request, context):
    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                  "Input image_bytes has 40 images; the limit is 32")


def test_grpc_errors_and_timeouts_become_one_line(grpc_server, tmp_path):
  image = tmp_path / "a.png"
  image.write_bytes(tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)).numpy())
  target = f"127.0.0.1:{grpc_server(_Refusing())}"
  with pytest.raises(client_lib.ServingError) as info:
    client_lib.run([str(image)], target, protocol="grpc",
                   output_dir=str(tmp_path / "out"))
  assert str(info.value) == ("TF Serving error: gRPC INVALID_ARGUMENT: "
                             "Input image_bytes has 40 images; the limit is "
                             "32")
  assert isinstance(info.value, errors.UserError)  # One line from a tool.
  assert isinstance(info.value.__cause__, grpc.RpcError)
  # The other failures of a request, and what is not one.
  message = client_lib.failure_message
  assert message(TimeoutError("--timeout=1 s passed (x)")) == (
      "--timeout=1 s passed (x)")
  assert message(ConnectionRefusedError(111, "Connection refused")) == (
      "cannot reach the server: [Errno 111] Connection refused")
  assert message(KeyError("bug")) is None
