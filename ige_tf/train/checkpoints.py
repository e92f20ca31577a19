"""Training checkpoints: what they hold, exact restore, when they are saved.

A training checkpoint (`ckpt-<step>` in a run's `model_dir`) holds the
objects of `training_objects`: "model" (its weights), "optimizer" (its
variables: slots, iterations, loss scale), "step" (the loop's int64 step
counter) and "rng" (`random_states`: the model's random-number states). A
resumed run restores all of them with `restore_exact`, so it continues bit
for bit where the interrupted one stopped (tests/train/test_train_run.py
kills a run at a random step and compares).

`Checkpoints` is the training loop's checkpoint phase: it saves every
`every_steps` steps, at every epoch end and once more at the end of training
if the last save is older than the last step, keeping the latest three.
"""
from absl import logging
import keras
import tensorflow as tf

from ige_tf.train import distributed

MAX_TO_KEEP = 3


class CheckpointError(RuntimeError):
  """A checkpoint in a model directory cannot be restored."""


def random_states(model):
  """The model's random-number states: its variables that are not weights
  (the `keras.random.SeedGenerator` state of every Dropout and other random
  layer, int `[2]` each). Keras does not checkpoint them with the model; the
  training checkpoint does ("rng"), so a resumed run draws the same dropout
  masks as the uninterrupted one."""
  weights = {id(v) for v in model.weights}
  return [v for v in model.variables if id(v) not in weights]


def training_objects(model, optimizer, step):
  """What a training checkpoint holds: everything a resumed run needs to
  continue bit for bit.

  Args:
    model: the Keras model (its weights are saved).
    optimizer: its outer Keras optimizer (slots, iterations, loss scale).
    step: the loop's int64 `[]` step variable.

  Returns:
    dict checkpoint name -> object, the keyword arguments of
    `tf.train.Checkpoint`: "model", "optimizer", "step" and "rng" (the list
    of `random_states(model)`).
  """
  return {"model": model, "optimizer": optimizer, "step": step,
          "rng": random_states(model)}


def _variables(obj):
  """The variables a checkpointed object owns: a Keras model's weights, a
  Keras optimizer's variables, a variable, or a list of variables."""
  if isinstance(obj, (list, tuple)):
    return list(obj)
  if isinstance(obj, keras.layers.Layer):
    return list(obj.weights)
  if isinstance(obj, keras.optimizers.Optimizer):
    return list(obj.variables)
  return [obj]


def _variable_name(variable):
  return getattr(variable, "path", None) or variable.name


def restore_exact(objects, path):
  """Restores `objects` from checkpoint `path`, exactly or not at all.

  Every variable of every object must receive a value from the checkpoint,
  and every variable the checkpoint stores under those objects' names must be
  used. Values the checkpoint holds under other names (e.g. "optimizer" and
  "step" when only a model is restored) are ignored.

  Args:
    objects: dict checkpoint name -> Keras model (its weights), Keras
      optimizer, variable or list of variables (the keyword arguments of
      `tf.train.Checkpoint`).
    path: a checkpoint prefix (e.g. `tf.train.latest_checkpoint(model_dir)`).

  Raises:
    CheckpointError: the checkpoint is unreadable, a shape differs, or
      variables do not match (the message lists them).
  """
  try:
    status = tf.train.Checkpoint(**objects).restore(path)
    # Unmatched values are checked below, naming them; silence TF's warning.
    status.expect_partial()
  except Exception as e:  # pylint: disable=broad-except  (any failure = unusable)
    raise CheckpointError(
        f"cannot restore checkpoint {path}: {type(e).__name__}: "
        f"{str(e).splitlines()[0] if str(e) else ''}. The checkpoint is corrupt "
        "or was written by a different model configuration; delete it or use "
        "another --model_dir.") from e
  # TF's public status checks cannot tell "optimizer not restored on purpose"
  # from "model weight unused": read the matching the restore made
  # (`assert_consumed` does the same over the whole checkpoint).
  restore = status._checkpoint  # pylint: disable=protected-access
  matched_ids = {id(o) for o in restore.object_by_proto_id.values()}
  missing = [f"{name}: {_variable_name(v)}" for name, obj in objects.items()
             for v in _variables(obj) if id(v) not in matched_ids]
  nodes = restore.object_graph_proto.nodes
  unused = []
  queue = [(child.node_id, child.local_name) for child in nodes[0].children
           if child.local_name in objects]
  seen = set()
  while queue:
    node_id, node_path = queue.pop(0)
    if node_id in seen:
      continue
    seen.add(node_id)
    node = nodes[node_id]
    if node.attributes and node_id not in restore.object_by_proto_id:
      unused.append(node_path)
    queue.extend((c.node_id, f"{node_path}/{c.local_name}")
                 for c in node.children)
  if missing or unused:
    lines = []
    if missing:
      lines.append(f"{len(missing)} variable(s) of the model have no value in "
                   "the checkpoint: " + ", ".join(sorted(missing)))
    if unused:
      lines.append(f"{len(unused)} checkpointed variable(s) match nothing in "
                   "the model: " + ", ".join(sorted(unused)))
    raise CheckpointError(
        f"checkpoint {path} does not match the model built from this "
        "configuration (was it written by another configuration?): "
        + "; ".join(lines))


def resume(objects, model_dir):
  """The restore phase: restores `objects` exactly from the chief's latest
  checkpoint in `model_dir`, if there is one (every worker reads the same).

  Args:
    objects: the training objects (`training_objects`), restored in place.
    model_dir: the run directory.

  Returns:
    The checkpoint prefix restored from (str), or None for a new run.

  Raises:
    CheckpointError: from `restore_exact`.
  """
  latest = distributed.latest_checkpoint(model_dir)
  if latest:
    restore_exact(objects, latest)
    logging.info("Resumed from %s at step %d", latest, int(objects["step"]))
  return latest


class Checkpoints:
  """The loop's checkpoint phase: saves the training objects to `save_dir`.

  Saves after every step that is a multiple of `every_steps`
  (`after_step`), at every epoch end (`save`) and at the end of training
  (`save_final`); `tf.train.CheckpointManager` keeps the latest
  `MAX_TO_KEEP` and names them `ckpt-<step>`. Under a multi-worker
  strategy every worker saves (a collective), each to its own `save_dir`
  (`distributed.write_dir`): only the chief's is the run directory.
  """

  def __init__(self, objects, save_dir, every_steps):
    """
    Args:
      objects: the training objects (`training_objects`).
      save_dir: where this process saves (`distributed.write_dir`).
      every_steps: int >= 1, the checkpoint period in steps.
    """
    self.every_steps = int(every_steps)
    self.manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(**objects), save_dir, max_to_keep=MAX_TO_KEEP)

  @property
  def latest(self):
    """The prefix of the last checkpoint saved in `save_dir`, or None."""
    return self.manager.latest_checkpoint

  def save(self, step):
    """Saves `ckpt-<step>` (int) and returns its prefix."""
    return self.manager.save(checkpoint_number=step)

  def after_step(self, step):
    """Saves if `step` (int, the number of steps taken) is a multiple of the
    period. Returns the prefix saved, or None."""
    if step % self.every_steps == 0:
      return self.save(step)
    return None

  def save_final(self, step, changed=False):
    """Saves `ckpt-<step>` unless the last save is of this very step and
    nothing changed since (`changed`: e.g. precise BN recomputed the
    statistics). Returns the prefix saved, or None."""
    if changed or self.latest is None or not self.latest.endswith(f"-{step}"):
      return self.save(step)
    return None
