"""erftools: effective receptive fields and shape bias of vision models.

The public API is flat: everything a user needs is importable from ``erftools``.
"""
__version__ = "0.1.0"

from .models import create_model, list_models, get_model_info  # noqa: E402,F401
from ._io import ErftoolsError  # noqa: E402,F401

__all__ = ["__version__", "create_model", "list_models", "get_model_info", "ErftoolsError"]
