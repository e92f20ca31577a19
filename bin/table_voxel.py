"""`python bin/table_voxel.py` runs `ige-table-voxel`; the program is ige_tf/bin/table_voxel.py."""
from ige_tf.bin import table_voxel

if __name__ == "__main__":
  table_voxel.run()
