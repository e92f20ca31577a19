"""ige_tf: Inverse Graphics Energy Networks (Jack et al., CVPR 2019) in TensorFlow 2 / Keras 3."""
import glob
import os

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tensorboard==2.21.0",
    "keras==3.15.1",
    "gin-config==0.5.0",
    "absl-py==2.5.1",
    "h5py==3.14.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "trimesh==5.2.0",
    "numba==0.68.1",
    "embreex==4.4.0.post1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "tqdm==4.70.1",
]


def console_scripts():
  """`ige-<name>` for every program module ige_tf/bin/<name>.py (_ -> -)."""
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(
      os.path.join(HERE, "ige_tf", "bin", "*.py")))
  return [f"ige-{name.replace('_', '-')} = ige_tf.bin.{name}:run"
          for name in names if name != "__init__"]


def config_files():
  """Every gin config under ige_tf/configs, relative to the package."""
  root = os.path.join(HERE, "ige_tf")
  return sorted(os.path.relpath(p, root) for p in glob.glob(
      os.path.join(root, "configs", "**", "*.gin"), recursive=True))


setuptools.setup(
    name="ige_tf",
    version="0.1.0",
    description="IGE-Net: inverse graphics energy networks for pose lifting and single-view reconstruction",
    packages=setuptools.find_packages(include=["ige_tf", "ige_tf.*"]),
    python_requires=">=3.10,<3.13",
    package_data={"ige_tf": config_files()},
    install_requires=INSTALL_REQUIRES,
    # setuptools and wheel: the packaging test builds a wheel without build
    # isolation (no network), so they must be installed beside pytest.
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0",
                             "setuptools==65.5.0", "wheel==0.48.0"]},
    entry_points={"console_scripts": console_scripts()},
)
