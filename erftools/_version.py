"""The single source of erftools' version (read by pyproject.toml and ``erftools.__version__``)."""
__version__ = "0.2.0"
