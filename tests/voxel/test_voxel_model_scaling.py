"""The paper's per-level constancy of the energy's multiply-adds (6.1)."""
from ige_tf.voxel import models


def test_energy_levels_cost_the_same_up_to_256():
  """IGE-MN at 256^3: the finest (256^2) level costs about what the next
  (128^2) does; a channel floor of 4 made it 4x (f = 4 instead of 2)."""
  model = models.ige_voxel_model("mn", resolution=256, num_steps=1)
  energy = model.get_layer("inner_optimizer").energy
  assert energy.feature_channels == (128, 64, 32, 16, 8, 4, 2)
  assert energy.depth_bins == (256, 128, 64, 32, 16, 8, 4)
  levels = energy.multiply_adds()
  # VALID borders make coarse levels cheaper: (h - 2)^2 (h - 4)^2 / h^4.
  assert 1.0 < levels[-1] / levels[-2] < 1.05
  assert max(levels) == levels[-1] < 1.2 * levels[3]  # 32^2 and finer.
