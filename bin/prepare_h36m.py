"""`python bin/prepare_h36m.py` runs `ige-prepare-h36m`; the program is ige_tf/bin/prepare_h36m.py."""
from ige_tf.bin import prepare_h36m

if __name__ == "__main__":
  prepare_h36m.run()
