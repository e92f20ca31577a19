"""ige_tf: Inverse Graphics Energy Networks (Jack et al., CVPR 2019) in TensorFlow 2 / Keras 3."""
import setuptools

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "tensorboard==2.21.0",
    "keras==3.15.1",
    "tensorflow-datasets==4.9.10",
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

setuptools.setup(
    name="ige_tf",
    version="0.1.0",
    description="IGE-Net: inverse graphics energy networks for pose lifting and single-view reconstruction",
    packages=setuptools.find_packages(include=["ige_tf", "ige_tf.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0"]},
)
