"""Every shipped model family round-trips through `tf.train.Checkpoint`.

The invariant: every layer that holds a list of sublayers calls
`ige_tf.core.track_sublayers` on it (Keras 3's tracked lists are invisible to
TensorFlow's object-based checkpoints, so the listed layers' weights would be
neither saved nor restored by `tf.train.Checkpoint(model=model)`, the object
that evaluation, export and `--init_model_dir` restore). This test checks it
for each family by saving a checkpoint, comparing what it holds with the
model's variables (count and shapes), perturbing every weight and restoring.

Models are built directly with tiny shapes (no data fixtures), so the file
runs from any pytest call.

Inception-v4 (I4) models are not built here: the I4 encoder alone has ~42M
parameters. I4 and MobileNetV2 encoders are Keras-applications models behind
the same `encoders.build_image_encoder`, and the rest of an I4 model (the 3D
decoder, image decoder, frustum energy and `UnrolledSGD`) is the code the MN
cases below check.
"""
import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from ige_tf.examples.denoising import DenoisingProblem
from ige_tf.pose import models as pose_models
from ige_tf.voxel import models as voxel_models

_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"

_tiny_baseline = functools.partial(pose_models.baseline_lifter, units=16,
                                   num_blocks=1)

FAMILIES = {
    "denoising": lambda: DenoisingProblem(
        length=8, num_steps=2, hidden_units=(4,), output_units=4).build_model(),
    "pose_baseline": lambda: pose_models.baseline_lifter(units=16,
                                                         num_blocks=2),
    "pose_ige": lambda: pose_models.ige_lifter(
        num_steps=2, initial_estimate_fn=_tiny_baseline),
    "voxel_baseline_mn": lambda: voxel_models.baseline_voxel_model(
        "mn", resolution=32, image_size=32, base_channels=8),
    "voxel_ige_mn": lambda: voxel_models.ige_voxel_model(
        # 128^2 images: the energy's coarsest level (4^2) needs S >= 96.
        "mn", resolution=32, num_steps=1, image_size=128,
        image_decoder_channels=8, generator_channels=4),
}


def _unique(variables):
  seen, out = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      out.append(v)
  return out


def check_checkpoint_round_trip(model, directory):
  """Asserts that `tf.train.Checkpoint(model=model)` saves every variable of
  `model` (count and shapes) and restores each one exactly."""
  variables = _unique(model.weights)
  assert model.trainable_weights, f"{model.name} has no trainable weights"
  saved_values = [v.numpy() for v in variables]
  path = tf.train.Checkpoint(model=model).write(str(directory / "ckpt"))

  stored = sorted(tuple(shape) for name, shape in tf.train.list_variables(path)
                  if name.startswith("model/") and name.endswith(_VALUE))
  expected = sorted(tuple(v.shape) for v in variables)
  short = {shape: (expected.count(shape), stored.count(shape))
           for shape in sorted(set(expected))
           if stored.count(shape) != expected.count(shape)}
  assert stored == expected, (
      f"{model.name}: the checkpoint holds {len(stored)} variables, the model "
      f"{len(expected)}; shape -> (in the model, in the checkpoint) where "
      f"they differ: {dict(list(short.items())[:10])}")

  for v in variables:
    dtype = tf.as_dtype(v.dtype)
    if dtype.is_floating or dtype.is_integer:
      v.assign(v.numpy() + np.asarray(1.5 if dtype.is_floating else 1,
                                      dtype.as_numpy_dtype))
  tf.train.Checkpoint(model=model).read(path).assert_consumed()
  not_restored = [v.path for v, value in zip(variables, saved_values)
                  if not np.array_equal(v.numpy(), value)]
  assert not not_restored, (
      f"{model.name}: not restored from the checkpoint: {not_restored[:10]}")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_variable_is_saved_and_restored(family, tmp_path):
  check_checkpoint_round_trip(FAMILIES[family](), tmp_path)


class _UntrackedList(keras.layers.Layer):
  """A layer that breaks the invariant: a list of sublayers, not tracked."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.hidden = [keras.layers.Dense(3, name=f"hidden{i}") for i in range(2)]

  def call(self, x):
    for layer in self.hidden:
      x = layer(x)
    return x


def test_the_check_catches_a_list_without_track_sublayers(tmp_path):
  x = keras.Input((3,))
  model = keras.Model(x, _UntrackedList()(x), name="untracked")
  with pytest.raises(AssertionError, match="untracked: the checkpoint holds"):
    check_checkpoint_round_trip(model, tmp_path)
