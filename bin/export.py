"""`python bin/export.py` runs `ige-export`; the program is ige_tf/bin/export.py."""
from ige_tf.bin import export

if __name__ == "__main__":
  export.run()
