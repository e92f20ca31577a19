"""`python bin/inspect_records.py` runs `ige-inspect-records`; the program is ige_tf/bin/inspect_records.py."""
from ige_tf.bin import inspect_records

if __name__ == "__main__":
  inspect_records.run()
