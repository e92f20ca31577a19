"""`python bin/prepare_shapenet.py` runs `ige-prepare-shapenet`; the program is ige_tf/bin/prepare_shapenet.py."""
from ige_tf.bin import prepare_shapenet

if __name__ == "__main__":
  prepare_shapenet.run()
