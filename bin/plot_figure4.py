"""`python bin/plot_figure4.py` runs `ige-plot-figure4`; the program is ige_tf/bin/plot_figure4.py."""
from ige_tf.bin import plot_figure4

if __name__ == "__main__":
  plot_figure4.run()
