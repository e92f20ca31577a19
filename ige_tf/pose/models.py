"""Pose lifting model builders (gin-configurable): baseline and IGE lifter.

Every model maps
  pose_2d     float32 `[B, 16, 2]`  MPII16 joints, distorted normalized
                                    image coordinates `(uv - c) / f`
  distortion  float32 `[B, 5]`      (k1, k2, k3, p1, p2)
to the training loop's output dict
  steps       float32 `[T+1, B, 16, 3]`  H36M16 joints, camera frame, metres
                                         (T = 0 for the baseline)
  energy      float32 `[T, B]`      (IGE) energy at `steps[t]`
  grad_norm   float32 `[T, B]`      (IGE) energy-gradient norm at `steps[t]`
  standardized float32 `[B, 16, 3]` (default baseline) standardized
                                    root-relative output, for Martinez's
                                    training loss.

Parameterization (docs/pose_model.md). The baseline regresses the pose
relative to the pelvis, standardized with training-set statistics (paper 5.1,
Martinez et al.; `baseline.MartinezBaseline`); `baseline.CameraPlacement`
then places it in the camera frame with the closed-form root translation
that best explains the observed 2D pose under perspective projection. The
paper author's formulation (`baseline_lifter(output_frame="camera")`,
ige_tf/configs/pose/models/baseline_paper.gin) regresses the camera-frame
pose directly, without standardization. The IGE's inner variable is this
camera-frame pose itself, in metres (all 16 joints free), refined by the
core `UnrolledSGD` on `energy.PoseEnergy`, whose value and derivatives are
finite for every finite estimate (energy.py).

Where the rest lives: the layers in `baseline.py` and `energy.py`, the
geometry they use (undistortion, root translation, pairwise distances) in
`geometry.py`, multiply-add counting in `flops.py`.
"""
import gin
import keras
import tensorflow as tf

from ige_tf.core import UnrolledSGD
from ige_tf.pose import baseline
from ige_tf.pose import energy as energy_lib
from ige_tf.pose import skeleton
from ige_tf.train import loop

INITIAL_ESTIMATE = "initial_estimate"
INNER_OPTIMIZER = "inner_optimizer"
ENERGY = "energy"


def model_inputs():
  """Keras inputs of every pose model: `{"pose_2d", "distortion"}`."""
  return {"pose_2d": keras.Input((skeleton.MPII16.num_joints, 2),
                                 name="pose_2d"),
          "distortion": keras.Input((5,), name="distortion")}


def set_baseline_statistics(model, statistics):
  """Copies `pipeline.load_statistics` output into a baseline model.

  Args:
    model: a model from `baseline_lifter` (or containing one).
    statistics: dict with pose_2d_mean/std `[16, 2]` and pose_3d_mean/std
      `[16, 3]` (root-relative, metres).
  """
  layer = find_baseline(model)
  layer.set_statistics(statistics["pose_2d_mean"], statistics["pose_2d_std"],
                       statistics["pose_3d_mean"], statistics["pose_3d_std"])


def find_baseline(model):
  """The `MartinezBaseline` layer inside a pose model."""
  # pylint: disable-next=protected-access
  for layer in model._flatten_layers(include_self=False):
    if isinstance(layer, baseline.MartinezBaseline):
      return layer
  raise ValueError(f"model {model.name} has no MartinezBaseline layer")


OUTPUT_FRAMES = ("root_relative", "camera")


@gin.configurable
def baseline_lifter(units=1024, num_blocks=2, dropout_rate=0.5,
                    batch_norm=True, residual=True, max_norm=None,
                    min_root_depth=1.0, output_frame="root_relative",
                    statistics=None, name="baseline"):
  """Martinez baseline with camera-frame outputs.

  Two formulations (docs/pose_model.md):
    * output_frame "root_relative" (default, Martinez et al.): standardized
      inputs, a standardized root-relative output, placed in the camera
      frame by `baseline.CameraPlacement`; outputs "steps" and
      "standardized" (for the "standardized_mse" loss).
    * output_frame "camera" (the paper author's code): unstandardized
      inputs, the dense output is the camera-frame pose itself (known up to
      scale: train it with a scale-invariant loss, "scaled_joint_distance");
      outputs "steps" only.

  Args:
    units, num_blocks, dropout_rate, batch_norm, residual, max_norm: see
      `baseline.MartinezBaseline`.
    min_root_depth: see `baseline.CameraPlacement` ("root_relative" only).
    output_frame: one of `OUTPUT_FRAMES`.
    statistics: optional `pipeline.load_statistics` dict to standardize with.
    name: model name.

  Returns:
    A built functional `keras.Model`: inputs `{"pose_2d" [B, 16, 2],
    "distortion" [B, 5]}`, outputs `{"steps" [1, B, 16, 3] camera frame
    metres, "standardized" [B, 16, 3] ("root_relative" only)}`.

  Raises:
    ValueError: an unknown `output_frame`.
  """
  if output_frame not in OUTPUT_FRAMES:
    raise ValueError(f"baseline_lifter.output_frame must be one of "
                     f"{OUTPUT_FRAMES}, got {output_frame!r}")
  inputs = model_inputs()
  camera_output = output_frame == "camera"
  net = baseline.MartinezBaseline(units, num_blocks, dropout_rate, batch_norm,
                                  residual, max_norm,
                                  standardize=not camera_output,
                                  name=INITIAL_ESTIMATE)
  out = net(inputs["pose_2d"])
  if camera_output:
    outputs = {"steps": keras.ops.expand_dims(out["pose_3d"], 0)}
  else:
    pose = baseline.CameraPlacement(min_root_depth, name="camera_placement")(
        out["pose_3d"], inputs["pose_2d"], inputs["distortion"])
    outputs = {"steps": keras.ops.expand_dims(pose, 0),
               "standardized": out["standardized"]}
  model = keras.Model(inputs, outputs, name=name)
  if statistics is not None:
    set_baseline_statistics(model, statistics)
  return model


def restore_baseline(model, init_model_dir):
  """Loads a trained baseline run's latest checkpoint into `model`.

  Args:
    model: a model built by `baseline_lifter` with the run's architecture.
    init_model_dir: the baseline run's `--model_dir`.

  Raises:
    FileNotFoundError: `init_model_dir` has no checkpoint.
    loop.CheckpointError: the checkpoint cannot be restored into `model`
      (`loop.restore_exact`; e.g. written by another architecture).
  """
  latest = tf.train.latest_checkpoint(init_model_dir)
  if latest is None:
    raise FileNotFoundError(
        f"INIT_MODEL_DIR {init_model_dir!r} has no checkpoint: train the "
        "initial-estimate baseline there first (e.g. bin/train.py "
        "--gin_file=pose/b128-1.gin --model_dir=...)")
  try:
    loop.restore_exact({"model": model}, latest)
  except loop.CheckpointError as e:
    # The underlying cause when there is one (a shape mismatch): the loop's
    # own advice (delete the checkpoint) is wrong for a baseline run.
    cause = e.__cause__
    detail = (f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
              if cause is not None and str(cause) else str(e))
    raise loop.CheckpointError(
        f"cannot load the baseline checkpoint {latest} (INIT_MODEL_DIR) into "
        f"the initial estimate: {detail.rstrip('.')}. Was INIT_MODEL_DIR "
        "trained with the same baseline architecture (units, blocks) as this "
        "IGE config's baseline_lifter?") from e


@gin.configurable
def pose_energy(reprojection_units=(64,), reprojection_outputs=16,
                feasibility_units=(64,), feasibility_outputs=16,
                kernel_scale=1e-3, hip_min_length=0.05,
                normalize_observed_scale=True, feasibility_feature_scale=1.0,
                name=ENERGY, dtype=None):
  """Builds the IGE energy layer (`energy.PoseEnergy`); see its arguments.
  `dtype`: its Keras dtype policy (None: the global one)."""
  return energy_lib.PoseEnergy(
      reprojection_units=reprojection_units,
      reprojection_outputs=reprojection_outputs,
      feasibility_units=feasibility_units,
      feasibility_outputs=feasibility_outputs, kernel_scale=kernel_scale,
      hip_min_length=hip_min_length,
      normalize_observed_scale=normalize_observed_scale,
      feasibility_feature_scale=feasibility_feature_scale, dtype=dtype,
      name=name)


@gin.configurable
def ige_lifter(num_steps=4, init_model_dir=None, train_initial_estimate=True,
               initial_estimate_fn=baseline_lifter, energy_fn=pose_energy,
               learning_rate=1.0, clip_value=1.0, momentum=0.1,
               learn_learning_rate=True, learn_clip_value=True,
               learn_momentum=True, safeguard=True, statistics=None,
               name="ige"):
  """IGE lifter: a baseline's estimate refined by `num_steps` inner steps.

  Args:
    num_steps: T, unrolled inner steps.
    init_model_dir: a trained baseline run whose latest checkpoint
      initializes the initial-estimate network (its statistics included).
      None skips loading (only to rebuild a trained IGE before restoring it).
    train_initial_estimate: fine-tune the initial-estimate network (else it
      is frozen: its batch norm runs in inference mode, dropout is off).
    initial_estimate_fn: builds the baseline (`baseline_lifter` with that
      run's architecture).
    energy_fn: builds the energy layer from `name` and `dtype` keyword
      arguments (`pose_energy`).
    learning_rate, clip_value, momentum: the inner optimizer's (initial)
      hyper-parameters (paper 5.2: 1, 1, 0.1).
    learn_learning_rate, learn_clip_value, learn_momentum: learn them.
    safeguard: at inference (evaluation, export, lifting) reject every inner
      step that raises the energy (`UnrolledSGD.monotone_inference`): the
      pose stays at the previous step and that example's step size halves.
      Training runs the plain steps either way.
    statistics: optional `pipeline.load_statistics` dict, used when
      `init_model_dir` is None.
    name: model name.

  Returns:
    A built functional `keras.Model`: inputs `{"pose_2d", "distortion"}`,
    outputs `{"steps" [T+1, B, 16, 3], "energy" [T, B], "grad_norm" [T, B]}`.
  """
  initial_model = initial_estimate_fn(statistics=statistics)
  if init_model_dir:
    restore_baseline(initial_model, init_model_dir)
  initial_model.trainable = bool(train_initial_estimate)
  if int(num_steps) == 0 and not train_initial_estimate:
    raise ValueError("ige_lifter: with num_steps = 0 and a frozen initial "
                     "estimate nothing is trainable")
  inputs = model_inputs()
  initial = initial_model(inputs)["steps"][0]
  context = {"pose_2d": inputs["pose_2d"], "distortion": inputs["distortion"]}
  # The energy and the inner loop compute in float32 under any global
  # policy: in half precision the reprojection energy's gradient overflows
  # for a joint near or behind the camera (NaN iterates from the first inner
  # step). Only the initial-estimate network follows mixed precision.
  energy = energy_fn(name=ENERGY, dtype="float32")
  # Built explicitly: with num_steps = 0 the energy is never called, yet the
  # model's structure (and checkpoint) should not depend on num_steps.
  energy.build((None, skeleton.H36M16.num_joints, 3),
               {"pose_2d": (None, skeleton.MPII16.num_joints, 2),
                "distortion": (None, 5)})
  inner = UnrolledSGD(
      energy, int(num_steps), learning_rate=learning_rate,
      momentum=momentum, clip_value=clip_value,
      learn_learning_rate=learn_learning_rate,
      learn_momentum=learn_momentum, learn_clip_value=learn_clip_value,
      monotone_inference=safeguard, dtype="float32", name=INNER_OPTIMIZER)
  outputs = inner(initial, context, return_diagnostics=True)
  if int(num_steps) == 0:
    inner.trainable = False  # nothing to learn without steps
  return keras.Model(inputs, outputs, name=name)
