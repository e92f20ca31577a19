"""`python bin/lift.py` runs `ige-lift`; the program is ige_tf/bin/lift.py."""
from ige_tf.bin import lift

if __name__ == "__main__":
  lift.run()
