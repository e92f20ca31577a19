"""`python bin/table1.py` runs `ige-table1`; the program is ige_tf/bin/table1.py."""
from ige_tf.bin import table1

if __name__ == "__main__":
  table1.run()
