"""The mutation check's table: for each guard of RELIABILITY.md, the
minimal code change that removes it, and the tests that must then fail.

Each mutant replaces one exact snippet (`old`, which must occur exactly
once in `path`) by `new`. `python tests/mutants/run.py` applies each one to
a temporary copy of the tree and runs its `tests` there; a mutant whose
tests still pass "survived", which is a defect of the suite. The RELIABILITY
.md tables name each mutant in their "mutant" column
(tests/test_mutants.py checks both stay in step).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
  name: str           # Named in RELIABILITY.md's "mutant" column.
  guard: str          # What the change removes.
  path: str           # File changed, relative to the repository.
  old: str            # Exact snippet, once in `path`.
  new: str            # Its replacement.
  tests: tuple        # pytest node ids that must fail.


MUTANTS = (
    # ---------------------------------------------- 1. faults in training
    Mutant(
        "write_in_place", "checkpoints and JSON written to a temp name, "
        "then renamed (atomic.atomic_write)",
        "dis_tf/atomic.py",
        "  tmp = temp_path(path)\n  try:\n    yield tmp",
        "  tmp = path\n  try:\n    yield tmp",
        ("tests/test_atomic.py::test_failed_write_keeps_previous_and_removes_"
         "temp",
         "tests/test_reliability_training.py::test_enospc_mid_write_leaves_"
         "previous_checkpoint")),
    Mutant(
        "no_previous_backup", "a backup falls back to the previous state "
        "when the current one cannot be read",
        "dis_tf/callbacks.py",
        "    candidates = [state] + ([state[\"previous\"]] if "
        "state.get(\"previous\")\n                            else [])",
        "    candidates = [state]",
        ("tests/test_reliability_training.py::test_previous_backup_used_when_"
         "current_is_unreadable",)),
    Mutant(
        "state_committed_before_weights", "a backup's state.json is "
        "replaced only after the weights it names are committed",
        "dis_tf/callbacks.py",
        "    save_weights_atomically(self.model, os.path.join(self.write_dir, "
        "name))\n    old = self.read_state(self.write_dir)\n"
        "    previous = None\n"
        "    if old is not None and old[\"weights\"] != name:\n"
        "      previous = {\"epoch\": old[\"epoch\"], \"weights\": "
        "old[\"weights\"]}\n"
        "    atomic.write_json(\n"
        "        os.path.join(self.write_dir, self.STATE_FILE),\n"
        "        {\"epoch\": epoch, \"weights\": name, \"previous\": "
        "previous})\n",
        "    old = self.read_state(self.write_dir)\n"
        "    previous = None\n"
        "    if old is not None and old[\"weights\"] != name:\n"
        "      previous = {\"epoch\": old[\"epoch\"], \"weights\": "
        "old[\"weights\"]}\n"
        "    atomic.write_json(\n"
        "        os.path.join(self.write_dir, self.STATE_FILE),\n"
        "        {\"epoch\": epoch, \"weights\": name, \"previous\": "
        "previous})\n"
        "    save_weights_atomically(self.model, os.path.join(self.write_dir, "
        "name))\n",
        ("tests/test_reliability_training.py::test_kill_inside_a_backup_write_"
         "resumes_mid_phase",
         "tests/test_reliability_training.py::test_sigkill_at_seeded_points_"
         "resumes_to_identical_weights")),
    Mutant(
        "resume_restarts_phase", "a rerun resumes a phase after the epoch "
        "its committed state names (not from its start)",
        "dis_tf/callbacks.py",
        "      return int(candidate[\"epoch\"])\n",
        "      return 0\n",
        ("tests/test_reliability_training.py::test_sigkill_at_seeded_points_"
         "resumes_to_identical_weights",)),
    Mutant(
        "no_free_space_check", "free disk space checked before an HDF5 "
        "write (which crashes on a full disk)",
        "dis_tf/callbacks.py",
        "    _check_free_space(model, path)\n",
        "",
        ("tests/test_reliability_training.py::test_full_disk_fails_at_the_"
         "write_and_keeps_last_good",)),
    Mutant(
        "no_resume_skip", "a resumed run skips the batches its finished "
        "epochs read",
        "dis_tf/training.py",
        "data = data.skip(resumed * per_epoch)",
        "data = data.skip(0)",
        ("tests/test_training.py::test_killed_run_resumes_and_matches_an_"
         "uninterrupted_run",)),
    Mutant(
        "no_write_probe", "model_dir is checked writable before training",
        "dis_tf/training.py",
        "  _check_writable(model_dir)\n",
        "",
        ("tests/test_reliability_training.py::test_missing_parent_permission_"
         "named",
         "tests/test_reliability_training.py::test_read_only_model_dir_fails_"
         "before_training")),
    Mutant(
        "unreadable_backup_ignored", "a state.json naming an unreadable "
        "backup, with no previous state, is an error naming the backup",
        "dis_tf/callbacks.py",
        "        if i + 1 == len(candidates):\n          raise OSError(",
        "        if False:\n          raise OSError(",
        ("tests/test_reliability_training.py::test_corrupt_legacy_state_is_"
         "reported",)),
    # ------------------------------------------------------- 2. numerics
    Mutant(
        "mixed_precision_allowed", "the model refuses a non-float32 dtype "
        "policy",
        "dis_tf/modeling/dis_model.py",
        "    if policy.compute_dtype != \"float32\" or policy.variable_dtype "
        "!= \"float32\":",
        "    if False:",
        ("tests/test_reliability_numerics.py::test_mixed_precision_is_"
         "refused_with_a_clear_message",)),
    Mutant(
        "backbone_output_not_cast", "the backbone's output is cast to "
        "float32 before the subnets and the latent loop (model.precision)",
        "dis_tf/modeling/dis_model.py",
        "    return tf.cast(u1, tf.float32), tf.cast(v1, tf.float32)\n",
        "    return u1, v1\n",
        ("tests/test_precision.py::test_latent_loop_tensors_are_float32_"
         "under_every_policy",)),
    Mutant(
        "refine_in_linear_space", "refine_labelmap works in log space "
        "(no all-zero pixel at large steps)",
        "dis_tf/modeling/subnets.py",
        "  return tf.nn.softmax(tf.nn.log_softmax(u3, axis=-1)\n"
        "                       + log_scale[:, None, None, :], axis=-1)",
        "  probs = tf.nn.softmax(u3, axis=-1) * tf.exp(log_scale)[:, None, "
        "None, :]\n  return probs / tf.reduce_sum(probs, -1, keepdims=True)",
        ("tests/test_reliability_numerics.py::test_refinement_is_exact_where_"
         "the_linear_product_underflows",
         "tests/test_reliability_numerics.py::test_refined_probabilities_sum_"
         "to_one_at_large_steps")),
    Mutant(
        "overflowing_step_taken", "a gram step that overflows is rejected",
        "dis_tf/modeling/latent.py",
        "    finite = _finite_rows(tf.concat(produced, 1))\n",
        "    finite = tf.ones([tf.shape(new_v3)[0]], tf.bool)\n",
        ("tests/test_gram.py::test_gram_overflowing_steps_are_rejected_and_"
         "change_nothing",)),
    Mutant(
        "shared_conv_output_folded", "a batch norm folds only into a "
        "convolution whose output it alone reads",
        "dis_tf/modeling/batchnorm_folding.py",
        "        or len(conv._outbound_nodes) != 1  # pylint: "
        "disable=protected-access\n",
        "",
        ("tests/test_batchnorm_folding.py::test_fold_keeps_the_inference_"
         "output_and_folds_only_safe_pairs",)),
    Mutant(
        "nonlinear_conv_folded", "a batch norm folds only into a "
        "convolution with a linear activation",
        "dis_tf/modeling/batchnorm_folding.py",
        "        or conv.get_config()[\"activation\"] != \"linear\"\n",
        "",
        ("tests/test_batchnorm_folding.py::test_fold_keeps_the_inference_"
         "output_and_folds_only_safe_pairs",)),
    Mutant(
        "per_pixel_tag_path_scaled", "per_pixel divides only the u3 path "
        "of v1's gradient by h * w, not the tag path",
        "dis_tf/modeling/latent.py",
        "    return 1.0, 1.0 / tf.cast(height * width, dtype), 1.0\n",
        "    return 1.0, 1.0 / tf.cast(height * width, dtype), "
        "1.0 / tf.cast(height * width, dtype)\n",
        ("tests/test_gram.py::test_one_per_pixel_step_against_autodiff_of_the_"
         "two_v1_paths",)),
    # ------------------------------------------------------ 3. bad data
    Mutant(
        "no_pixel_limit", "images over data.max_image_pixels are bad "
        "files, refused before decoding",
        "dis_tf/data/voc.py",
        "      if max_pixels is not None and width * height > max_pixels:",
        "      if False:",
        ("tests/test_reliability_runs.py::test_pixel_bombs_are_bad_files_"
         "refused_before_decoding",
         "tests/test_reliability_runs.py::test_configured_pixel_limit_"
         "reaches_the_builders")),
    Mutant(
        "strict_build_skips", "a strict build (no skip_bad_files) stops at "
        "the first bad file",
        "dis_tf/data/voc.py",
        "    if not self.skip_bad_files:\n      raise error\n",
        "    if False:\n      raise error\n",
        ("tests/test_reliability_data.py::test_strict_voc_build_stops_at_the_"
         "first_bad_file",
         "tests/test_reliability_data.py::test_strict_web_build_stops_at_the_"
         "first_bad_file")),
    Mutant(
        "voc_bad_file_kept", "skip_bad_files skips a bad VOC example "
        "instead of writing it (with the previous example's data)",
        "dis_tf/data/voc.py",
        "        counter.bad(e)\n        continue\n      counter.kept()\n"
        "      yield name, {\n          \"image\": encoded,\n"
        "          \"mask\": encode_png(mask),",
        "        counter.bad(e)\n      counter.kept()\n"
        "      yield name, {\n          \"image\": encoded,\n"
        "          \"mask\": encode_png(mask),",
        ("tests/test_reliability_data.py::test_skip_voc_skips_exactly_the_bad_"
         "ones",)),
    Mutant(
        "web_bad_file_kept", "skip_bad_files skips a bad web image instead "
        "of writing it (with the previous image)",
        "dis_tf/data/web_tags.py",
        "        counter.bad(e)\n        continue\n",
        "        counter.bad(e)\n",
        ("tests/test_reliability_data.py::test_skip_web_skips_exactly_the_bad_"
         "ones",)),
    # --------------------------------------------------- 4. serving inputs
    Mutant(
        "decode_before_checks", "images are decoded only after every "
        "request check",
        "dis_tf/serving/inputs.py",
        "      one, _after(checks, image_bytes),",
        "      one, image_bytes,",
        ("tests/test_serving_check_order.py::test_decoding_waits_for_every_"
         "request_check",)),
    Mutant(
        "resize_before_checks", "image tensors are resized only after the "
        "checks",
        "dis_tf/serving/inputs.py",
        "  images = _after(checks, images)\n",
        "",
        ("tests/test_serving_check_order.py::test_image_tensors_are_resized_"
         "only_after_the_checks",)),
    Mutant(
        "no_batch_size_bound", "--serving.max_batch_size",
        "dis_tf/serving/inputs.py",
        "  size_check = tf.debugging.Assert(batch <= bounds.max_batch_size, [",
        "  size_check = tf.debugging.Assert(True, [",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_image_"
         "tensors",)),
    Mutant(
        "no_padded_output_bound", "--serving.max_batch_pixels (padded "
        "output)",
        "dis_tf/serving/inputs.py",
        "  pixels = batch * height * width\n",
        "  pixels = batch * 0\n",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_encoded_"
         "images",
         "tests/test_serving_check_order.py::test_each_bound_refuses_image_"
         "tensors")),
    Mutant(
        "no_float_range_check", "float image tensors must be finite and in "
        "[0, 255]",
        "dis_tf/serving/inputs.py",
        "        tf.math.is_finite(tf.reduce_sum(images)), low >= 0, "
        "high <= 255]))",
        "        True, True]))",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_image_"
         "tensors",)),
    Mutant(
        "no_image_pixels_bound", "--serving.max_image_pixels (one encoded "
        "image, from its header)",
        "dis_tf/serving/inputs.py",
        "size[0] * size[1] <= bounds.max_image_pixels)",
        "size[0] * size[1] >= 0)",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_encoded_"
         "images",)),
    Mutant(
        "no_tensor_pixels_bound", "--serving.max_image_pixels (an image "
        "tensor)",
        "dis_tf/serving/inputs.py",
        "shape[1] * shape[2] <= bounds.max_image_pixels",
        "shape[1] * shape[2] >= 0",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_image_"
         "tensors",)),
    Mutant(
        "no_steps_bound", "--serving.max_steps (each steps value)",
        "dis_tf/serving/inputs.py",
        "tf.logical_and(steps >= 0, steps <= bounds.max_steps)",
        "steps >= 0",
        ("tests/test_serving_check_order.py::test_each_steps_bound_refuses",)),
    Mutant(
        "no_batch_steps_bound", "--serving.max_batch_steps (batch x "
        "max(steps))",
        "dis_tf/serving/inputs.py",
        "work <= bounds.max_batch_steps",
        "work >= 0",
        ("tests/test_serving_check_order.py::test_each_steps_bound_refuses",)),
    Mutant(
        "empty_batch_allowed", "an empty image_bytes batch is refused with "
        "its own message",
        "dis_tf/serving/inputs.py",
        "  not_empty = tf.debugging.Assert(batch > 0, [",
        "  not_empty = tf.debugging.Assert(True, [",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_encoded_"
         "images",)),
    Mutant(
        "empty_tensor_allowed", "an empty image tensor (no image, zero "
        "height / width) is refused with its own message",
        "dis_tf/serving/inputs.py",
        "  not_empty = tf.debugging.Assert(tf.size(images) > 0, [",
        "  not_empty = tf.debugging.Assert(True, [",
        ("tests/test_serving_check_order.py::test_each_bound_refuses_image_"
         "tensors",)),
    Mutant(
        "batch_size_after_header_pass", "the batch size of image_bytes is "
        "checked before the header pass reads any element",
        "dis_tf/serving/inputs.py",
        "      tf.cast(batch, tf.int64) <= bounds.max_batch_size, [",
        "      tf.cast(batch, tf.int64) >= 0, [",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "unknown_format_passed", "an element that is not a JPEG, PNG, GIF "
        "or BMP is refused by its signature, naming its index",
        "dis_tf/serving/inputs.py",
        "    check = tf.debugging.Assert(known, [",
        "    check = tf.debugging.Assert(True, [",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "animated_gif_allowed", "an animated GIF (2+ frames) is refused "
        "before decoding",
        "dis_tf/serving/inputs.py",
        "      (frames >= 2, lambda: tf.constant(_GIF_ANIMATED, tf.int64)),",
        "      (frames >= 2**30, lambda: tf.constant(_GIF_ANIMATED, "
        "tf.int64)),",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "gif_frame_outside_allowed", "a GIF frame outside the logical "
        "screen is refused (the screen alone passes the pixel check)",
        "dis_tf/serving/inputs.py",
        "      (outside, lambda: tf.constant(_GIF_FRAME_OUTSIDE, tf.int64)),",
        "      (tf.logical_and(outside, False),\n"
        "       lambda: tf.constant(_GIF_FRAME_OUTSIDE, tf.int64)),",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "gif_blocks_unbounded", "a GIF with more than 64 blocks before "
        "its end is refused",
        "dis_tf/serving/inputs.py",
        "      (tf.logical_not(done), lambda: tf.constant(_GIF_TOO_MANY_"
        "BLOCKS,",
        "      (tf.logical_and(tf.logical_not(done), False),\n"
        "       lambda: tf.constant(_GIF_TOO_MANY_BLOCKS,",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "gif_chain_not_followed", "the GIF walk follows each data sub-block "
        "chain to its terminator (pointer doubling)",
        "dis_tf/serving/inputs.py",
        "maximum_iterations=32)",
        "maximum_iterations=0)",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",
         "tests/test_serving_check_order.py::test_gifs_and_bmps_within_the_"
         "rules_decode")),
    Mutant(
        "bmp_size_not_read", "a BMP's size is read from its header for "
        "--serving.max_image_pixels",
        "dis_tf/serving/inputs.py",
        "    return tf.stack([little32_abs(u8(22, 4)), little32_abs(u8(18, "
        "4)),",
        "    return tf.stack([0 * little32_abs(u8(22, 4)), little32_abs(u8("
        "18, 4)),",
        ("tests/test_serving_check_order.py::test_the_header_pass_refuses_"
         "each_bad_element",)),
    Mutant(
        "client_error_traceback", "a TF Serving error is one line from "
        "export/client.py, exit status 1",
        "dis_tf/serving/client.py",
        "class ServingError(errors.UserError, RuntimeError):",
        "class ServingError(RuntimeError):",
        ("tests/test_client.py::test_client_tool_prints_a_server_error_as_"
         "one_line",
         "tests/test_client.py::test_grpc_errors_and_timeouts_become_one_"
         "line")),
    Mutant(
        "bmp_top_down_misread", "a top-down BMP's negative height is read "
        "as its size (not as a 4-Gpixel image)",
        "dis_tf/serving/inputs.py",
        "    return tf.where(value >= 2**31, 2**32 - value, value)  # BMP "
        "top-down",
        "    return value  # BMP top-down",
        ("tests/test_serving_check_order.py::test_gifs_and_bmps_within_the_"
         "rules_decode",)),
    Mutant(
        "plain_http_allowed", "plain http:// to another host is refused "
        "without --insecure",
        "dis_tf/serving/client.py",
        "  if (parts.scheme == \"http\" and not connection.insecure",
        "  if (False and not connection.insecure",
        ("tests/test_client.py::test_plain_http_to_another_host_needs_"
         "insecure",)),
    Mutant(
        "ca_file_ignored", "REST over https verifies with --ca_file",
        "dis_tf/serving/client.py",
        "    context = ssl.create_default_context(cafile=connection.ca_file)",
        "    context = ssl.create_default_context()",
        ("tests/test_client.py::test_rest_tls_with_ca_file",)),
    Mutant(
        "grpc_plain_to_remote", "a gRPC channel to another host is TLS "
        "unless --insecure",
        "dis_tf/serving/client.py",
        "  if tls_flags or not (connection.insecure or",
        "  if tls_flags or not (True or",
        ("tests/test_client.py::test_grpc_channel_is_tls_unless_local_or_"
         "insecure",)),
    Mutant(
        "rest_timeout_per_read", "--timeout bounds the whole REST request, "
        "not each read",
        "dis_tf/serving/client.py",
        "      sock.settimeout(deadline.left(\"reading the response\"))",
        "      sock.settimeout(connection.timeout)",
        ("tests/test_client.py::test_rest_timeout_covers_the_whole_"
         "request",)),
    Mutant(
        "rest_content_length_unchecked", "a REST response whose "
        "Content-Length is over --max_response_bytes is refused before "
        "its body is read",
        "dis_tf/serving/client.py",
        "    if length and length.isdigit() and int(length) > limit:",
        "    if False:",
        ("tests/test_client.py::test_rest_response_size_limit",)),
    Mutant(
        "rest_body_unbounded", "a REST body (chunked) is read up to "
        "--max_response_bytes only",
        "dis_tf/serving/client.py",
        "      if size > limit:\n",
        "      if False:\n",
        ("tests/test_client.py::test_rest_response_size_limit",)),
    Mutant(
        "grpc_receive_unlimited", "gRPC responses over --max_response_bytes "
        "are refused (grpc.max_receive_message_length)",
        "dis_tf/serving/client.py",
        "  options = [(\"grpc.max_receive_message_length\",\n"
        "              int(connection.max_response_bytes))]",
        "  options = []",
        ("tests/test_client.py::test_grpc_timeout_and_response_size_limit",
         "tests/test_client.py::test_grpc_channel_is_tls_unless_local_or_"
         "insecure")),
    Mutant(
        "grpc_no_deadline", "--timeout is the gRPC call's deadline",
        "dis_tf/serving/client.py",
        "    response = stub.Predict(request, timeout=connection.timeout)",
        "    response = stub.Predict(request)",
        ("tests/test_client.py::test_grpc_timeout_and_response_size_limit",)),
    Mutant(
        "ca_file_with_http_allowed", "--ca_file with an http:// server is "
        "an error (it would not be used)",
        "dis_tf/serving/client.py",
        "  if connection.ca_file and parts.scheme != \"https\":",
        "  if False:",
        ("tests/test_client.py::test_rest_tls_with_ca_file",)),
    Mutant(
        "insecure_with_tls_allowed", "--insecure together with TLS flags "
        "is an error",
        "dis_tf/serving/client.py",
        "  if connection.insecure and tls_flags:",
        "  if False:",
        ("tests/test_client.py::test_grpc_channel_is_tls_unless_local_or_"
         "insecure",)),
    Mutant(
        "grpc_client_cert_dropped", "mutual TLS: the gRPC client presents "
        "--ssl_client_cert / --ssl_client_key",
        "dis_tf/serving/client.py",
        "                     if connection.ssl_client_key else None),\n"
        "        certificate_chain=(_read(connection.ssl_client_cert,\n"
        "                                 \"--ssl_client_cert\")\n"
        "                           if connection.ssl_client_cert else None))",
        "                     if False else None),\n"
        "        certificate_chain=None)",
        ("tests/test_client.py::test_grpc_tls_and_mutual_tls",)),
    Mutant(
        "http_error_status_dropped", "an HTTP error names its status and "
        "the body (or its \"error\")",
        "dis_tf/serving/client.py",
        "  if status >= 400:\n",
        "  if False:\n",
        ("tests/test_client.py::test_rest_http_error_shows_status_and_body",)),
    Mutant(
        "empty_predictions_passed", "an empty 'predictions' list is a "
        "clear error",
        "dis_tf/serving/client.py",
        "    if not isinstance(rows, list) or not rows:",
        "    if False:",
        ("tests/test_client.py::test_rest_empty_or_odd_predictions_are_clear_"
         "errors",)),
    Mutant(
        "empty_outputs_passed", "an empty columnar 'outputs' object is a "
        "clear error",
        "dis_tf/serving/client.py",
        "    if not columns:\n",
        "    if False:\n",
        ("tests/test_client.py::test_rest_empty_or_odd_predictions_are_clear_"
         "errors",)),
    Mutant(
        "grpc_empty_outputs_passed", "a gRPC response without outputs is a "
        "clear error",
        "dis_tf/serving/client.py",
        "  if not outputs or not len(outputs.get(\"class_ids\", [])):",
        "  if False:",
        ("tests/test_client.py::test_grpc_empty_outputs_are_a_clear_error",)),
    # --------------------------------------------------------- 6. security
    Mutant(
        "dotdot_path_allowed", "dataset paths with '..' are refused",
        "dis_tf/data/safe_paths.py",
        "  if \"..\" in parts:\n",
        "  if False:\n",
        ("tests/test_security.py::test_image_set_list_cannot_escape",
         "tests/test_security.py::test_annotation_paths_cannot_escape")),
    Mutant(
        "symlink_escape_allowed", "paths resolving outside the dataset "
        "root are refused",
        "dis_tf/data/safe_paths.py",
        "  if os.path.commonpath([real_root, real]) != real_root:\n",
        "  if False:\n",
        ("tests/test_security.py::test_symlink_out_of_the_voc_tree_is_"
         "refused",)),
    Mutant(
        "unsafe_load_planted", "no pickle / unsafe loading in the code "
        "(the AST scan)",
        "dis_tf/model_dir.py",
        "    model = keras.saving.load_model(path, safe_mode=True)",
        "    model = keras.saving.load_model(path, safe_mode=False)",
        ("tests/test_security.py::test_no_pickle_eval_or_unsafe_loading_in_"
         "the_code",)),
    # ------------------------------------------------- 7. runs and files
    Mutant(
        "no_fingerprint_check", "a model_dir from another training config "
        "is refused",
        "dis_tf/training.py",
        "  unrecorded = _check_fingerprints(config, model_dir, chain,\n"
        "                                   _previous_config(model_dir))",
        "  unrecorded = []",
        ("tests/test_reliability_runs.py::test_other_training_config_is_an_"
         "error_naming_the_fields",)),
    Mutant(
        "backup_is_not_state", "a phase killed mid-way (only its backup) "
        "is checked too (_phase_has_state)",
        "dis_tf/training.py",
        "          or os.path.exists(os.path.join(model_dir, \"backup\",",
        "          or False and os.path.exists(os.path.join(model_dir, "
        "\"backup\",",
        ("tests/test_reliability_runs.py::test_a_phase_killed_mid_way_is_"
         "checked_by_its_backup",)),
    Mutant(
        "no_fingerprint_chain", "a phase whose start weights changed "
        "(its predecessor retrained) is not reused",
        "dis_tf/model_dir.py",
        "  if current == stored[\"starts_from\"]:\n    return None\n",
        "  return None\n",
        ("tests/test_reliability_runs.py::test_retraining_a_phase_invalidates_"
         "the_phases_after_it",)),
    Mutant(
        "t_test_fingerprinted", "evaluation-only fields (latent.t_test) "
        "are not fingerprinted: changing them resumes",
        "dis_tf/model_dir.py",
        "  keys = _COMMON_FIELDS + [f\"train.{key}_steps\", "
        "f\"train.{key}_lr\"]",
        "  keys = _COMMON_FIELDS + [\"latent.t_test\", "
        "f\"train.{key}_steps\", f\"train.{key}_lr\"]",
        ("tests/test_reliability_runs.py::test_evaluation_only_changes_"
         "resume_without_retraining",)),
    Mutant(
        "field_not_fingerprinted", "every config field is fingerprinted or "
        "named in NOT_FINGERPRINTED (here train.seed is in neither)",
        "dis_tf/model_dir.py",
        "                              \"poly_power\", \"weight_decay\", "
        "\"steps_per_epoch\",\n                              \"seed\")])",
        "                              \"poly_power\", \"weight_decay\", "
        "\"steps_per_epoch\")])",
        ("tests/test_reliability_runs.py::test_every_config_field_is_"
         "fingerprinted_or_named_as_not",)),
    Mutant(
        "overwrite_keeps_reports", "--overwrite removes the old run's "
        "eval reports, figures and selection record",
        "dis_tf/training.py",
        "  for name in _STATE_ENTRIES + _EVAL_ENTRIES + tuple(old_reports):",
        "  for name in _STATE_ENTRIES:",
        ("tests/test_reliability_runs.py::test_overwrite_discards_the_state_"
         "and_trains_again",)),
    Mutant(
        "live_lock_taken", "a live holder's lock is never taken over",
        "dis_tf/locks.py",
        "      if self._stale(holder):",
        "      if True:",
        ("tests/test_reliability_runs.py::test_lock_of_another_host_or_a_"
         "live_pid_is_never_taken_over",)),
    Mutant(
        "dead_holder_lock_kept", "a lock whose holder is dead on this host "
        "is taken over",
        "dis_tf/locks.py",
        "    return not _pid_alive(pid, holder.get(\"start_ticks\"))",
        "    return False",
        ("tests/test_reliability_runs.py::test_second_training_run_is_"
         "refused_and_a_stale_lock_taken_over",)),
    Mutant(
        "reused_pid_is_holder", "a lock whose pid now belongs to another "
        "process (other start time) is stale",
        "dis_tf/locks.py",
        "    if now is not None and now != start_ticks:",
        "    if False:",
        ("tests/test_reliability_runs.py::test_lock_of_another_host_or_a_"
         "live_pid_is_never_taken_over",)),
    Mutant(
        "every_worker_takes_lock", "only the chief of a multi-worker job "
        "takes model_dir's lock",
        "dis_tf/training.py",
        "enabled=_is_chief(strategy)):",
        "enabled=True):",
        ("tests/test_reliability_runs.py::test_only_the_chief_takes_the_"
         "model_dir_lock",)),
    Mutant(
        "no_train_lock", "a training run takes model_dir/train.lock",
        "dis_tf/training.py",
        "enabled=_is_chief(strategy)):",
        "enabled=False):",
        ("tests/test_reliability_runs.py::test_only_the_chief_takes_the_"
         "model_dir_lock",
         "tests/test_reliability_runs.py::test_second_training_run_is_"
         "refused_and_a_stale_lock_taken_over")),
    Mutant(
        "prepare_without_lock", "a prepare of an unprepared data_dir takes "
        "data_dir/.prepare.lock",
        "dis_tf/data/pipeline.py",
        "  with locks.prepare_lock(data_dir).acquire(wait_seconds):",
        "  with locks.held(locks.prepare_lock(data_dir), enabled=False):",
        ("tests/test_reliability_runs.py::test_concurrent_prepare_of_one_"
         "data_dir_is_refused",)),
    Mutant(
        "prepared_data_dir_locked", "a prepared data_dir needs no prepare "
        "lock (runs may share it)",
        "dis_tf/data/pipeline.py",
        "    return builders  # Nothing to write: no lock needed.",
        "    pass",
        ("tests/test_reliability_runs.py::test_concurrent_prepare_of_one_"
         "data_dir_is_refused",)),
    Mutant(
        "prepare_does_not_wait", "the pipelines wait for a live prepare of "
        "the same data_dir",
        "dis_tf/data/pipeline.py",
        "  with locks.prepare_lock(data_dir).acquire(wait_seconds):",
        "  with locks.prepare_lock(data_dir).acquire(0):",
        ("tests/test_reliability_runs.py::test_pipelines_wait_for_a_live_"
         "prepare_and_use_it",)),
    Mutant(
        "raw_rename_planted", "every commit rename goes through "
        "dis_tf/atomic.py (the AST scan)",
        "dis_tf/callbacks.py",
        "    with atomic.atomic_write(path) as tmp:\n"
        "      model.save_weights(tmp)\n",
        "    model.save_weights(path + \".part.weights.h5\")\n"
        "    os.replace(path + \".part.weights.h5\", path)\n",
        ("tests/test_reliability_runs.py::test_every_rename_goes_through_the_"
         "atomic_helper",)),
    Mutant(
        "corrupt_phase_fatal", "a corrupt phase file is set aside and the "
        "phases after the last good one retrained",
        "dis_tf/training.py",
        "      corrupt.append((path, atomic.set_aside(path) if is_chief else "
        "path, e))",
        "      raise",
        ("tests/test_reliability_runs.py::test_corrupt_phase_weights_fall_"
         "back_to_the_last_good_phase",)),
    Mutant(
        "model_keras_not_checked", "a model.keras failing its zip CRC "
        "falls back to the phase weights",
        "dis_tf/model_dir.py",
        "  problem = _zip_problem(path)\n",
        "  problem = None\n",
        ("tests/test_reliability_runs.py::test_corrupt_model_keras_falls_"
         "back_to_the_phase_weights",)),
    Mutant(
        "other_network_set_aside", "a complete weights file of another "
        "network is an error, not set aside as corrupt",
        "dis_tf/training.py",
        "      if _h5_problem(path) is None:\n        # A complete file",
        "      if False:\n        # A complete file",
        ("tests/test_reliability_runs.py::test_complete_weights_of_another_"
         "network_are_not_set_aside",)),
    Mutant(
        "stage1_corrupt_set_aside", "a corrupt stage-1 file under "
        "--stage=semi is an error naming the rebuild, left in place",
        "dis_tf/training.py",
        "      if index < num_fixed:\n",
        "      if False:\n",
        ("tests/test_reliability_runs.py::test_corrupt_stage1_weights_for_"
         "stage2_name_the_recovery",)),
    Mutant(
        "corrupt_model_keras_unexplained", "a corrupt model.keras with no "
        "phase weights is an error naming the rerun",
        "dis_tf/model_dir.py",
        "    if model is None:\n      raise errors.CorruptFileError(",
        "    if False:\n      raise errors.CorruptFileError(",
        ("tests/test_reliability_runs.py::test_corrupt_model_keras_falls_"
         "back_to_the_phase_weights",)),
    Mutant(
        "nan_training_input", "NaN / Inf training inputs stop at the first "
        "step",
        "dis_tf/modeling/dis_model.py",
        "    image = tf.debugging.assert_all_finite(\n"
        "        x[\"image\"], \"Training input 'image' has NaN or Inf "
        "pixels\")",
        "    image = x[\"image\"]",
        ("tests/test_reliability_runs.py::test_nan_or_inf_training_input_is_"
         "an_error_naming_it",)),
    Mutant(
        "empty_annotations_allowed", "an annotations.jsonl without lines "
        "is an error naming it",
        "dis_tf/data/web_tags.py",
        "    if num_lines == 0:\n",
        "    if False:\n",
        ("tests/test_reliability_runs.py::test_empty_annotations_file_is_an_"
         "error",)),
    Mutant(
        "all_bad_split_allowed", "every listed file bad (skip_bad_files) "
        "is an error listing them, not an empty split",
        "dis_tf/data/voc.py",
        "    if self.skipped and not self.num_kept:",
        "    if False:",
        ("tests/test_reliability_runs.py::test_every_image_bad_is_an_error_"
         "not_an_empty_split",)),
    Mutant(
        "nan_eval_image_scored", "a NaN / Inf evaluation image is an error "
        "naming its file",
        "dis_tf/evaluation.py",
        "  if not bool(tf.reduce_all(finite)):",
        "  if False:",
        ("tests/test_reliability_runs.py::test_nan_or_inf_evaluation_input_"
         "is_an_error_naming_the_file",)),
    # ---------------------------------------------- the quality score
    Mutant(
        "quality_parts_unchecked", "a config.json quality fit of other "
        "parts than this version computes is an error naming the rerun",
        "dis_tf/quality.py",
        "    if fit.parts != PARTS:\n",
        "    if False:\n",
        ("tests/test_quality.py::test_fit_parts_learns_the_signal_and_"
         "refuses_a_degenerate_split",)),
    Mutant(
        "quality_degenerate_fitted", "a selection split with no two IoU "
        "classes (or one image) fits no score: the fallback serves",
        "dis_tf/quality.py",
        "  if len(ious) < 2 or labels.all() or not labels.any():",
        "  if len(ious) < 1:",
        ("tests/test_quality.py::test_fit_parts_learns_the_signal_and_"
         "refuses_a_degenerate_split",)),
    Mutant(
        "rank_without_quality", "ranking with an export that has no "
        "quality output is an error naming the re-export",
        "dis_tf/segmenter.py",
        "    if quality is None:\n      raise errors.UserError(\n"
        "          \"this export has no",
        "    if False:\n      raise errors.UserError(\n"
        "          \"this export has no",
        ("tests/test_predict.py::test_rank_files_refuses_an_export_without_"
         "quality",)),
    Mutant(
        "benchmark_replaced", "a benchmark folder of other parameters "
        "given to a bench script is measured as it is, never regenerated",
        "dis_tf/data/synthetic.py",
        "  if os.path.isfile(marker):\n    with open(marker) as f:\n"
        "      summary = json.load(f)\n    summary[\"reused\"] = True\n"
        "    return summary\n  return ensure_synthetic_benchmark(out_dir)",
        "  return ensure_synthetic_benchmark(out_dir)",
        ("tests/test_data_synthetic.py::test_use_or_generate_never_replaces_"
         "another_benchmark",)),
    Mutant(
        "auto_precision_stored", "--model.precision=auto is resolved when "
        "the config is built; config.json records the policy used",
        "dis_tf/config.py",
        "    if key == \"model.precision\" and value == PRECISION_AUTO:\n"
        "      value = host_precision()\n",
        "",
        ("tests/test_config.py::test_auto_precision_is_resolved_never_stored",
         )),
    Mutant(
        "bf16_without_bf16_units", "'auto' gives float32 on a CPU without "
        "bf16 units (oneDNN emulates bf16 about 3x slower there)",
        "dis_tf/config.py",
        "          if any(flag in present for flag in BF16_CPU_FLAGS):",
        "          if True:",
        ("tests/test_config.py::test_host_precision_reads_the_bf16_flags",)),
    # ------------------------------------------------- the suite itself
    Mutant(
        "unlisted_skip_passes", "under .ci/run a skip off the allow-list "
        "fails the run",
        "tests/conftest.py",
        "    report.outcome = \"failed\"\n",
        "    pass\n",
        ("tests/test_skips.py::test_unlisted_skip_fails_only_when_strict",)),
)
