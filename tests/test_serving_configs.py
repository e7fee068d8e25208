"""The TF Serving config files in export/ parse as TF Serving parses them.

`export/models.config` is a text-format `ModelServerConfig`, whose proto
`tensorflow-serving-api` ships (`tensorflow_serving.config.
model_server_config_pb2`). `export/batching_parameters.txt` is a text-format
`BatchingParameters` (`tensorflow_serving/servables/tensorflow/
session_bundle_config.proto`), which the package does not ship: the message
is declared here with the same field names, numbers and types (fields 1-7
of that file), so `text_format.Parse` is as strict as the server's parser
(unknown fields, wrong types and a missing `{ value: ... }` wrapper are
errors). Both parsers are first checked on TF Serving's documented
examples (docs "TensorFlow Serving Configuration").
"""

import os

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2
import pytest
from tensorflow_serving.config import model_server_config_pb2

from dis_tf import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# TF Serving's documented examples (serving_config.md).
DOC_MODEL_CONFIG = """
model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
  }
}
"""
DOC_BATCHING = """
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""


def _batching_parameters_class():
  """`tensorflow.serving.BatchingParameters`, in a private pool."""
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  f = descriptor_pb2.FileDescriptorProto(
      name="dis_tf_tests/session_bundle_config.proto",
      package="tensorflow.serving", syntax="proto3",
      dependency=["google/protobuf/wrappers.proto"])
  message = f.message_type.add(name="BatchingParameters")
  field = descriptor_pb2.FieldDescriptorProto
  for number, name, kind in [
      (1, "max_batch_size", ".google.protobuf.Int64Value"),
      (2, "batch_timeout_micros", ".google.protobuf.Int64Value"),
      (3, "max_enqueued_batches", ".google.protobuf.Int64Value"),
      (4, "num_batch_threads", ".google.protobuf.Int64Value"),
      (5, "thread_pool_name", ".google.protobuf.StringValue")]:
    message.field.add(name=name, number=number, type_name=kind,
                      type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL)
  message.field.add(name="allowed_batch_sizes", number=6,
                    type=field.TYPE_INT64, label=field.LABEL_REPEATED)
  message.field.add(name="pad_variable_length_inputs", number=7,
                    type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
  pool.Add(f)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _batching_parameters_class()


def _read(name):
  with open(os.path.join(REPO, "export", name)) as f:
    return f.read()


def test_parsers_accept_the_documented_examples_and_refuse_mistakes():
  config = text_format.Parse(DOC_MODEL_CONFIG,
                             model_server_config_pb2.ModelServerConfig())
  assert [c.name for c in config.model_config_list.config] == [
      "my_first_model", "my_second_model"]
  assert list(config.model_config_list.config[1].model_version_policy
              .specific.versions) == [42, 43]
  batching = text_format.Parse(DOC_BATCHING, BatchingParameters())
  assert batching.max_batch_size.value == 128
  assert batching.num_batch_threads.value == 8
  assert not batching.HasField("thread_pool_name")
  for text in ["max_batch_size: 4",                   # not wrapped
               "max_batch_size { value: 4.5 }",       # not an int64
               "max_batch_sise { value: 4 }",         # a typo
               "pad_variable_length_inputs: maybe"]:
    with pytest.raises(text_format.ParseError):
      text_format.Parse(text, BatchingParameters())
  with pytest.raises(text_format.ParseError):
    text_format.Parse("model_config_list { config { nam: 'x' } }",
                      model_server_config_pb2.ModelServerConfig())


def test_models_config_parses_and_serves_the_export_dir():
  config = text_format.Parse(_read("models.config"),
                             model_server_config_pb2.ModelServerConfig())
  assert config.WhichOneof("config") == "model_config_list"
  (model,) = config.model_config_list.config
  assert model.name == "dis"
  assert model.model_platform == "tensorflow"
  assert os.path.isabs(model.base_path)
  assert model.model_version_policy.latest.num_versions == 1


def _check_batching(batching, export_max_batch_size):
  """The rules of the batching file against an export's bounds."""
  size = batching.max_batch_size.value
  problems = []
  if not 1 <= size <= export_max_batch_size:
    problems.append(f"max_batch_size {size} is not in 1.."
                    f"{export_max_batch_size} (--serving.max_batch_size): "
                    "merged batches would be refused")
  if batching.num_batch_threads.value < 1:
    problems.append("num_batch_threads must be >= 1")
  allowed = list(batching.allowed_batch_sizes)
  if allowed and (allowed != sorted(set(allowed)) or allowed[-1] != size):
    problems.append(f"allowed_batch_sizes {allowed} must increase and end "
                    f"at max_batch_size {size}")
  return problems


def test_batching_parameters_parse_and_fit_the_export_bound():
  batching = text_format.Parse(_read("batching_parameters.txt"),
                               BatchingParameters())
  for field in ("max_batch_size", "batch_timeout_micros",
                "max_enqueued_batches", "num_batch_threads"):
    assert batching.HasField(field), field
  assert batching.pad_variable_length_inputs
  export_bound = config_lib.ServingConfig().max_batch_size
  assert _check_batching(batching, export_bound) == []
  assert batching.max_batch_size.value <= export_bound
  # The check itself: a file over the export's bound is refused.
  over = BatchingParameters()
  over.CopyFrom(batching)
  over.max_batch_size.value = export_bound + 1
  assert "merged batches would be refused" in " ".join(
      _check_batching(over, export_bound))
  over.max_batch_size.value = 4
  over.allowed_batch_sizes.extend([2, 8])
  assert "allowed_batch_sizes" in " ".join(_check_batching(over, 32))
