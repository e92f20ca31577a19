"""IGE-I4 at full size: the XLA-compiled and the mixed-precision step.

  python bench/bench_i4_precision.py --work_dir=/tmp/bench_i4_precision

The test suite checks IGE-I4 (Inception-ResNet-v2 encoder, 54M weights) at
96^2 / 6^3 and only lowers its XLA step to HLO (compiling it takes too long
for the suite: tests/train/test_precision_xla.py). This runs the paper's
size, 128^2 images and 32^3 frustum grids (`voxel/ige-i4.gin`, 1 inner
step, random encoder weights, batch 2 of tiny generated records: one
category, 2 models, 2 views each), with the test's own step
(`loop.make_train_step`, plain SGD from the same initial weights) for
every seed:

  float32       the uncompiled step (eager), the reference;
  xla           `jit_compile=True`: compiled and run (seconds measured);
  mixed         `mixed_float16` with loss scaling;
  mixed+enc32   `mixed_float16` with `ige_voxel_model.encoder_dtype =
                'float32'`.

and prints the loss and the update difference `|u - u_f32| / |u_f32|` and
cosine of each against float32 (mean ± std over `--seeds`). Writes
<work_dir>/results.json.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "train"))

from ige_tf import atomic  # noqa: E402  (after the path)

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "/tmp/bench_i4_precision",
                    "Where the generated records and results.json go.")
flags.DEFINE_integer("seeds", 2, "Model initialisations.")
flags.DEFINE_integer("image_size", 128, "Image size S (a multiple of 32).")
flags.DEFINE_integer("resolution", 32, "Frustum grid resolution R.")

CONFIG = "voxel/ige-i4.gin"


def _records(work_dir, image_size, resolution):
  """The records of tests/train/conftest.py at this size (resumed if there)."""
  from ige_tf.voxel.synthetic import make_synthetic_records  # pylint: disable=import-outside-toplevel
  return make_synthetic_records(
      os.path.join(work_dir, f"data_{image_size}_{resolution}"),
      models_per_synset=2, num_train=1, resolutions=(resolution,), views=2,
      image_size=image_size)


def _one_seed(params, seed):
  """{policy: {"loss", "rel", "cos", "seconds"}} for one initialisation."""
  import test_precision_xla as steps  # pylint: disable=import-outside-toplevel
  problem, model = steps._build(CONFIG, params, mixed=False, seed=seed)  # pylint: disable=protected-access
  initial = [v.numpy() for v in model.variables]
  batch = steps._batch(problem, 2)  # pylint: disable=protected-access
  out = {}
  start = time.time()
  loss, update, _ = steps._step(problem, model, batch, initial)  # pylint: disable=protected-access
  out["float32"] = {"loss": loss, "seconds": time.time() - start}
  start = time.time()
  xla_loss, xla_update, _ = steps._step(problem, model, batch, initial,  # pylint: disable=protected-access
                                        jit_compile=True)
  out["xla"] = {"loss": xla_loss, "seconds": time.time() - start,
                "rel": steps._relative(xla_update, update),  # pylint: disable=protected-access
                "cos": steps._cosine(xla_update, update)}  # pylint: disable=protected-access
  for policy, extra in (("mixed", []), ("mixed+enc32", [
      "ige_voxel_model.encoder_dtype = 'float32'"])):
    start = time.time()
    m_loss, m_update, tries = steps._mixed_step(CONFIG, params + extra,  # pylint: disable=protected-access
                                                batch, initial, 16)
    out[policy] = {"loss": m_loss, "seconds": time.time() - start,
                   "rel": steps._relative(m_update, update),  # pylint: disable=protected-access
                   "cos": steps._cosine(m_update, update),  # pylint: disable=protected-access
                   "skipped": tries - 1}
  return out


def main(argv):
  del argv
  records = _records(FLAGS.work_dir, FLAGS.image_size, FLAGS.resolution)
  params = [f"RECORDS_DIR = {records!r}", "NUM_STEPS = 1",
            "ENCODER_WEIGHTS = None", f"RESOLUTION = {FLAGS.resolution}",
            f"VoxelProblem.image_size = {FLAGS.image_size}",
            "EVAL_RESOLUTION = None"]
  runs = []
  for seed in range(FLAGS.seeds):
    runs.append(_one_seed(params, seed))
    print(f"seed {seed}:", json.dumps(runs[-1]), flush=True)
  summary = {}
  for policy in runs[0]:
    summary[policy] = {
        key: [float(np.mean([r[policy][key] for r in runs])),
              float(np.std([r[policy][key] for r in runs]))]
        for key in runs[0][policy]}
  results = {"command": "python bench/bench_i4_precision.py "
                        f"--seeds={FLAGS.seeds} --image_size="
                        f"{FLAGS.image_size} --resolution={FLAGS.resolution}",
             "runs": runs, "mean_std": summary}
  path = os.path.join(FLAGS.work_dir, "results.json")
  atomic.write_json(path, results, indent=2)
  for policy, values in summary.items():
    print(policy, ", ".join(f"{k} {m:.4g} ± {s:.2g}"
                            for k, (m, s) in values.items()))


if __name__ == "__main__":
  app.run(main)
