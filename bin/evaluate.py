"""`python bin/evaluate.py` runs `ige-evaluate`; the program is ige_tf/bin/evaluate.py."""
from ige_tf.bin import evaluate

if __name__ == "__main__":
  evaluate.run()
