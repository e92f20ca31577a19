"""`python bin/train.py` runs `ige-train`; the program is ige_tf/bin/train.py."""
from ige_tf.bin import train

if __name__ == "__main__":
  train.run()
