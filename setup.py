"""Package discovery only (metadata lives in pyproject.toml): ships the top-level data/ folder as erftools._data."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["erftools", "erftools.*"]) + ["erftools._data"],
    package_dir={"erftools._data": "data"},
    package_data={"erftools._data": ["*", "**/*"]},
)
