"""`python bin/make_synthetic_shapenet.py` runs `ige-make-synthetic-shapenet`; the program is ige_tf/bin/make_synthetic_shapenet.py."""
from ige_tf.bin import make_synthetic_shapenet

if __name__ == "__main__":
  make_synthetic_shapenet.run()
