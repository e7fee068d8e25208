"""Serving dis_tf models with TensorFlow Serving: the library.

* `dis_tf.serving.inputs`: decoding and checking request images;
* `dis_tf.serving.module`: the serving computation and the exported
  `tf.Module` with its five signatures (`build_serving_module`,
  `predict_in_process`);
* `dis_tf.serving.export_lib`: versioned, atomic SavedModel export with
  warmup records (`export_saved_model`, `export_from_model_dir`).

`export/export_saved_model.py` is the command line over it.
"""
