"""Where the voxel models' one-step gradient differs under mixed precision.

  python bench/bench_voxel_precision.py --work_dir=/tmp/bench_voxel_precision

Generates tiny synthetic ShapeNet records (one category, `--models` models,
the last one the test split, 2 views, 128^2 images, 32^3 frustum grids) in
`--work_dir` (resumed if present), then for `voxel/base-mn.gin` and
`voxel/ige-mn.gin` (1 inner step, random encoder weights) and every seed
computes the gradient of the training loss on the first `--batch_size`
training views (batch normalization in training mode, as `train` runs it)
under four policies from the same initial weights:

  float64         the reference (every layer in float64);
  float32         the default;
  mixed           `mixed_float16` (the loss scaled by 2^15 and unscaled);
  mixed+enc32     `mixed_float16` with `encoder_dtype = 'float32'`.

and prints, for each against float64 and against float32, the relative
difference `|g - g_ref| / |g_ref|` and the cosine over all trainable weights,
and the relative difference over the image encoder's weights and over the
rest (decoders, energy, inner optimizer); mean ± std over `--seeds` model
initialisations. `--noise_images` replaces the renders by uniform noise
(no uniform background). Writes <work_dir>/results_b<batch_size>[_noise].json.
"""
import json
import os

from absl import app
from absl import flags
import gin
import keras
import numpy as np
import tensorflow as tf

from ige_tf.core import dtype_policy
from ige_tf.train import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "/tmp/bench_voxel_precision",
                    "Where the generated records and results.json go.")
flags.DEFINE_integer("models", 2, "Generated models (the last is the test "
                     "split; each gives 2 training views).")
flags.DEFINE_integer("batch_size", 2, "Training views per gradient.")
flags.DEFINE_integer("seeds", 3, "Model initialisations.")
flags.DEFINE_bool("noise_images", False, "Uniform-noise images instead of "
                  "the renders.")

CONFIGS = {"voxel/base-mn.gin": ["baseline_voxel_model", []],
           "voxel/ige-mn.gin": ["ige_voxel_model", ["NUM_STEPS = 1"]]}
POLICIES = ("float64", "float32", "mixed", "mixed+enc32")
LOSS_SCALE = 2.0 ** 15


def _records(work_dir, models):
  """Records of `models` generated planes, the last one the test split
  (resumed if there)."""
  from ige_tf.voxel.synthetic import make_synthetic_records  # pylint: disable=import-outside-toplevel
  return make_synthetic_records(
      os.path.join(work_dir, f"data_{models}"), models_per_synset=models,
      num_train=models - 1, resolutions=(32,), views=2, image_size=128)


def _build(config, params, policy, seed):
  gin.clear_config()
  cli.parse_gin([config], list(params))
  problem = cli.make_problem()
  with dtype_policy("mixed_float16" if policy.startswith("mixed") else policy):
    keras.utils.set_random_seed(seed)
    model = problem.build_model()
  return problem, model


def _gradient(problem, model, batch, initial, mixed):
  """float64 vector of d loss / d trainable weights; encoder mask."""
  for variable, value in zip(model.variables, initial):
    variable.assign(tf.cast(value, variable.dtype))
  features, labels = batch
  with tf.GradientTape() as tape:
    loss = tf.cast(problem.loss(labels, model(features, training=True)),
                   tf.float32)
    scaled = loss * LOSS_SCALE if mixed else loss
  grads = tape.gradient(scaled, model.trainable_variables)
  encoder = {id(v) for v in model.get_layer("image_encoder").trainable_variables}
  flat = np.concatenate([np.asarray(g, np.float64).reshape(-1) for g in grads])
  mask = np.concatenate([np.full(int(np.prod(v.shape)), id(v) in encoder)
                         for v in model.trainable_variables])
  return flat / (LOSS_SCALE if mixed else 1.0), mask


def _compare(g, ref, mask):
  def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
  return {"rel": rel(g, ref),
          "cos": float(g @ ref / (np.linalg.norm(g) * np.linalg.norm(ref))),
          "rel_encoder": rel(g[mask], ref[mask]),
          "rel_rest": rel(g[~mask], ref[~mask])}


def main(argv):
  del argv
  records = _records(FLAGS.work_dir, FLAGS.models)
  results = {}
  for config, (builder, extra) in CONFIGS.items():
    params = [f"RECORDS_DIR = {records!r}", "ENCODER_WEIGHTS = None"] + extra
    rows = {}
    for seed in range(FLAGS.seeds):
      problem, model = _build(config, params, "float32", seed)
      features, labels = next(iter(problem.dataset(
          "train", FLAGS.batch_size, shuffle=False)))
      if FLAGS.noise_images:
        features = dict(features)
        features["image"] = tf.random.stateless_uniform(
            tf.shape(features["image"]), (seed, 1))
      batch = (features, labels)
      initial = [v.numpy() for v in model.variables]
      grads = {}
      for policy in POLICIES:
        policy_params = params + (
            [f"{builder}.encoder_dtype = 'float32'"]
            if policy == "mixed+enc32" else [])
        problem, model = _build(config, policy_params,
                                policy.split("+")[0], seed)
        grads[policy], mask = _gradient(problem, model, batch, initial,
                                        policy.startswith("mixed"))
        if not np.all(np.isfinite(grads[policy])):
          raise FloatingPointError(f"{config} {policy}: non-finite gradient")
      for reference in ("float64", "float32"):
        for policy in POLICIES[POLICIES.index(reference) + 1:]:
          key = f"{policy} vs {reference}"
          for name, value in _compare(grads[policy], grads[reference],
                                      mask).items():
            rows.setdefault(key, {}).setdefault(name, []).append(value)
    results[config] = rows
    print(f"{config} (batch {FLAGS.batch_size}, {FLAGS.seeds} seeds"
          f"{', noise images' if FLAGS.noise_images else ''}): mean ± std")
    print(f"  {'':24s} {'rel':>15s} {'cos':>15s} {'rel encoder':>15s} "
          f"{'rel rest':>15s}")
    for key, values in rows.items():
      print(f"  {key:24s} " + " ".join(
          f"{np.mean(v):8.3g} ± {np.std(v):<5.2g}" for v in values.values()))
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  suffix = f"_b{FLAGS.batch_size}" + ("_noise" if FLAGS.noise_images else "")
  with open(os.path.join(FLAGS.work_dir, f"results{suffix}.json"), "w") as f:
    json.dump({"batch_size": FLAGS.batch_size, "seeds": FLAGS.seeds,
               "noise_images": FLAGS.noise_images, "results": results}, f,
              indent=1)


if __name__ == "__main__":
  app.run(main)
