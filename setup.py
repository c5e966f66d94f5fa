"""vin_jax: Video Interface Networks for long-video generation in JAX."""
from setuptools import find_packages, setup

# Versions seen working together on Python 3.11 (CPU) without TensorFlow.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorflow-datasets==4.9.10",
    "importlib_resources>=6.0",  # tfds imports it when building a dataset
    "array-record==0.8.6",
    "grain==0.2.18",
    "ml-collections==1.1.0",
    "absl-py==2.5.1",
    "einops==0.8.2",
    "numpy==2.4.6",
    "opencv-python-headless==5.0.0.93",
    "scenedetect==0.7.2",
    "mediapy==1.2.7",
    "imageio-ffmpeg==0.8.1",
    "Pillow>=10",
    "tensorboardX==2.6.5",
    "tqdm==4.70.1",
    "safetensors==0.8.0",
    "matplotlib>=3.8",
    "sentencepiece==0.2.3",   # the T5 tokenizer (text.encoder="t5"; the model file is the user's)
]

# PyTorch references for the converters' tests and for reading Hugging Face sources (`convert`). torch is pinned
# to its CPU build's version: an unpinned torch pulls the CUDA build (about 5 GB).
CONVERT_REQUIRES = ["torch==2.13.0", "diffusers==0.42.1", "transformers==5.24.0"]

setup(
    name="vin_jax",
    version="0.1.0",
    description="Video Interface Networks (VIN) for parallel long-video diffusion, in JAX/Flax",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["vin_jax", "vin_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "chex==0.1.92", "nbmake==1.5.5", "ipykernel==7.4.0",
                 "nbformat==5.11.1", "nbclient==0.11.0",
                 "jax[tpu]==0.10.2", *CONVERT_REQUIRES],  # libtpu: tests compile for TPU topologies (tests/parallel/test_tpu_compile.py)
        "export": ["orbax-export", "tensorflow-cpu"],
        "convert": CONVERT_REQUIRES,
        # libtpu for benchmarks/tpu_aot.py: compiles for TPU topologies on a CPU machine (nothing runs)
        "tpu": ["jax[tpu]==0.10.2"],
    },
)
