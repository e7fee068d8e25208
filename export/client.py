"""Command-line client of a DIS model served by TensorFlow Serving.

  # REST (base64 JSON), port 8501:
  python export/client.py --server=http://localhost:8501 --images=a.jpg,b.png
  # gRPC (tensorflow-serving-api PredictionServiceStub), port 8500:
  python export/client.py --server=localhost:8500 --protocol=grpc \
      --images=a.jpg --steps=10 --output_dir=/tmp/labelmaps

Prints each image's tags (classes whose tag probability exceeds
--tag_threshold) and the classes present in its labelmap, and writes the
files of `tools/predict.py` (`dis_tf.prediction_io`) into --output_dir:
`<stem>_labelmap.png` (class ids; the colours of --classes, else the VOC
palette), `<stem>_overlay.png` and
`predictions.jsonl` ("t_test" is --steps, null without it).
With --steps the `serving_steps` signature runs that many latent steps
instead of the export's fixed t_test.

Transport security: a server that is not on this machine (localhost,
127.0.0.0/8, ::1) is reached over TLS: REST needs an https:// URL
(--ca_file: a CA bundle instead of the system's), gRPC uses TLS with the
system roots or --ssl_root_certs, and --ssl_client_cert / --ssl_client_key
for mutual TLS. Plain http:// or an insecure gRPC channel to another host
needs an explicit --insecure. --timeout bounds the whole request (connect,
send, server time and the full response), and --max_response_bytes the
size of the response.

The library behind it is `dis_tf.serving.client`.
"""

from absl import flags

from dis_tf import classes
from dis_tf import errors
from dis_tf.serving import client as client_lib


def main(argv):
  del argv
  f = flags.FLAGS
  connection = client_lib.Connection(
      timeout=f.timeout, max_response_bytes=f.max_response_bytes,
      insecure=f.insecure, ca_file=f.ca_file,
      ssl_root_certs=f.ssl_root_certs, ssl_client_cert=f.ssl_client_cert,
      ssl_client_key=f.ssl_client_key)
  class_set = classes.load_class_set(f.classes) if f.classes else None
  client_lib.run(f.images, f.server, protocol=f.protocol,
                 model_name=f.model_name, steps=f.steps, version=f.version,
                 output_dir=f.output_dir, tag_threshold=f.tag_threshold,
                 connection=connection, class_set=class_set)


def _define_flags():
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
  flags.DEFINE_string("classes", None,
                      "The served model's class file (classes.txt): the "
                      "labelmap PNGs and overlays take its colours (default: "
                      "the VOC palette). Its names must be the served ones.")
  flags.DEFINE_float("timeout", client_lib.DEFAULT_TIMEOUT,
                     "Seconds for the whole request: connect, send, server "
                     "time and the full response.")
  flags.DEFINE_integer("max_response_bytes",
                       client_lib.DEFAULT_MAX_RESPONSE_BYTES,
                       "Largest response accepted (gRPC "
                       "max_receive_message_length; REST bytes read).")
  flags.DEFINE_boolean("insecure", False,
                       "Allow plain http:// or an insecure gRPC channel to "
                       "a host that is not this machine.")
  flags.DEFINE_string("ca_file", None,
                      "REST over https://: CA bundle (PEM) to verify the "
                      "server with, instead of the system's.")
  flags.DEFINE_string("ssl_root_certs", None,
                      "gRPC TLS: root certificates (PEM) to verify the "
                      "server with, instead of the system's.")
  flags.DEFINE_string("ssl_client_cert", None,
                      "gRPC mutual TLS: client certificate chain (PEM).")
  flags.DEFINE_string("ssl_client_key", None,
                      "gRPC mutual TLS: the client certificate's private "
                      "key (PEM).")
  flags.mark_flags_as_required(["images"])


if __name__ == "__main__":
  _define_flags()
  errors.run(main)
