"""Multiply-add counts of the pose models' dense layers (per example).

One multiply-add is one `a * b + c` of a weight with an input value. The
pose models are stacks of dense layers on `[B, F]` features, so a dense
layer costs its kernel size `F * units` per example. Biases, batch norm
(folded into the kernels at inference), activations, the pairwise-distance
products with their constant +-1 matrix, the projection and the root
translation solve are not counted, as in the paper's Figure 4.
`PoseProblem.multiply_adds` adds them up for a whole model: the baseline's
dense layers, plus per inner step twice the energy's (one forward pass and
one backward pass for the gradient with respect to the estimate, which costs
the same multiply-adds).
"""
import numpy as np


def dense_multiply_adds(layers):
  """Multiply-adds per example of dense layers applied to `[B, F]` inputs.

  Args:
    layers: built `keras.layers.Dense` layers (e.g.
      `MartinezBaseline.dense_layers()`, `PoseEnergy.dense_layers()`).

  Returns:
    int: the sum of their kernel sizes.
  """
  return int(sum(int(np.prod(layer.kernel.shape)) for layer in layers))
