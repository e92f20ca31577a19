"""bin/voxel_demo.py --seeds: run names and the spread over seeds."""
import numpy as np
import pytest

from ige_tf.voxel import demo


def test_spread_is_mean_and_sample_std_per_step():
  result = demo.spread([[0.50, 0.60], [0.70, 0.80], [0.60, 0.40]])
  np.testing.assert_allclose(result["mean"], [0.60, 0.60])
  np.testing.assert_allclose(result["std"], [0.1, 0.2])  # ddof = 1
  assert result["min"] == [0.5, 0.4] and result["max"] == [0.7, 0.8]
  assert result["seeds"] == 3
  assert demo.spread([[0.3, 0.4]])["std"] == [0.0, 0.0]
  with pytest.raises(ValueError, match=r"\[seeds\]\[steps\]"):
    demo.spread([0.3, 0.4])


def test_seed_zero_keeps_the_single_seed_layout():
  assert demo.run_name("ige-mn", 0) == "ige-mn"
  assert demo.run_name("base-mn", 2) == "base-mn-seed2"


def test_answers_for_the_means_and_every_seed():
  ige = {"iou": demo.spread([[0.50, 0.55], [0.48, 0.47]]),
         "iou_class_mean": demo.spread([[0.4, 0.5], [0.4, 0.5]]),
         "seeds": {"0": {"iou": [0.50, 0.55]}, "1": {"iou": [0.48, 0.47]}}}
  base = {"iou": demo.spread([[0.45], [0.49]]),
          "iou_class_mean": demo.spread([[0.45], [0.45]]),
          "seeds": {"0": {"iou": [0.45]}, "1": {"iou": [0.49]}}}
  answers = demo._answers(ige, base, 2)  # pylint: disable=protected-access
  assert answers["ige_final_beats_baseline"] is True   # 0.51 > 0.47
  assert answers["ige_final_beats_step0"] is True      # 0.51 > 0.49
  assert answers["ige_class_mean_final_beats_baseline"] is True
  assert answers["per_seed"] == {
      "0": {"ige_final_beats_baseline": True, "ige_final_beats_step0": True},
      "1": {"ige_final_beats_baseline": False, "ige_final_beats_step0": False}}
