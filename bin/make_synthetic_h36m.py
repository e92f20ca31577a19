"""`python bin/make_synthetic_h36m.py` runs `ige-make-synthetic-h36m`; the program is ige_tf/bin/make_synthetic_h36m.py."""
from ige_tf.bin import make_synthetic_h36m

if __name__ == "__main__":
  make_synthetic_h36m.run()
