"""Names of the files of a run directory (`--model_dir`).

Here, apart from `ige_tf.train.loop` (which writes them, see its docstring
for what each holds), so that tools that only read a run's results
(`bin/table1.py`, `bin/table_voxel.py`, figures) need not import
TensorFlow.
"""
OPERATIVE_CONFIG = "operative_config.gin"
RUN_CONFIG = "config.gin"
RUN_RECORD = "run.json"
METRICS_FILE = "metrics.json"
EXPORT_DIR = "export"
