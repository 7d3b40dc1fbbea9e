"""Only the optional C extension lives here; all metadata is in pyproject.toml.

``optional=True``: without a working C compiler the build prints a warning and installs
the pure-Python package, which falls back to ``trio_gws._mask.apply_mask_python``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trio_gws._speedups", ["trio_gws/_speedups.c"], optional=True),
    ],
)
