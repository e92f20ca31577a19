"""`python bin/voxel_demo.py` runs `ige-voxel-demo`; the program is ige_tf/bin/voxel_demo.py."""
from ige_tf.bin import voxel_demo

if __name__ == "__main__":
  voxel_demo.run()
