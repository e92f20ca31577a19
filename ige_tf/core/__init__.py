"""Task-agnostic IGE: activations, energies, the unrolled optimizer, losses.

Public API: `softplus`, `softabs`, `EnergyMLP`, `EnergyConv2D`, `UnrolledSGD`,
`find_inner_optimizer(s)`, `MultiStepLoss`, `step_weights`, `per_step_mean`,
`dtype_policy`.
"""
from ige_tf.core.activations import softabs, softplus
from ige_tf.core.energies import (EnergyConv2D, EnergyMLP, scaled_glorot_uniform,
                                  track_sublayers)
from ige_tf.core.losses import MultiStepLoss, per_step_mean, step_weights
from ige_tf.core.precision import dtype_policy
from ige_tf.core.unrolled import (UnrolledSGD, find_inner_optimizer,
                                  find_inner_optimizers)

__all__ = [
    "softplus", "softabs", "EnergyMLP", "EnergyConv2D", "scaled_glorot_uniform",
    "track_sublayers",
    "UnrolledSGD", "find_inner_optimizer", "find_inner_optimizers",
    "MultiStepLoss", "step_weights", "per_step_mean", "dtype_policy",
]
