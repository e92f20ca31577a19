"""`python bin/demo.py` runs `ige-demo`; the program is ige_tf/bin/demo.py."""
from ige_tf.bin import demo

if __name__ == "__main__":
  demo.run()
