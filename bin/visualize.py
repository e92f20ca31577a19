"""`python bin/visualize.py` runs `ige-visualize`; the program is ige_tf/bin/visualize.py."""
from ige_tf.bin import visualize

if __name__ == "__main__":
  visualize.run()
