"""`python bin/import_r2n2.py` runs `ige-import-r2n2`; the program is ige_tf/bin/import_r2n2.py."""
from ige_tf.bin import import_r2n2

if __name__ == "__main__":
  import_r2n2.run()
