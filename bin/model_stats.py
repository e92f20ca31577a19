"""`python bin/model_stats.py` runs `ige-model-stats`; the program is ige_tf/bin/model_stats.py."""
from ige_tf.bin import model_stats

if __name__ == "__main__":
  model_stats.run()
