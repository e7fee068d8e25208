"""The study behind RESULTS.md, apart from the library.

`ablation` trains and scores the paper's Table-3 grid and `results_page`
renders RESULTS.md from its numbers; `diagnosis` measures what the latent
steps move; `pseudo_label_study` scores the weak images' pseudo labels;
`served_labelmap` measures the final prediction and the served setting.
These modules import the library; the library (`dis_tf.modeling`,
`dis_tf.data`, `dis_tf.serving`, `dis_tf.evaluation`, `dis_tf.training`, ...)
never imports them (tests/test_import_graph.py checks it), so a user of the
library loads none of the study. `dis_tf.selection`, which chooses the
setting an export serves, is library: the demo and tools/evaluate.py call it.
"""
