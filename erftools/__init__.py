"""erftools: effective receptive fields and shape bias of vision models.

The public API is flat: everything a user needs is importable from ``erftools``::

    from erftools import create_model, compute_erf, area_ratios, evaluate_shape_bias, analyse_shape_bias
"""
__version__ = "0.1.0"

from ._io import ErftoolsError  # noqa: E402,F401
from .models import create_model, get_model_info, list_models  # noqa: E402,F401

# name -> (module, attribute); imported on first use so that `import erftools` stays light
_LAZY = {
    "compute_erf": (".erf", "compute_erf"),
    "ErfResult": (".erf", "ErfResult"),
    "area_ratios": (".erf", "area_ratios"),
    "radial_profile": (".erf", "radial_profile"),
    "run_erf": (".erf.run", "run_erf"),
    "plot_erf": (".erf.plots", "plot_erf"),
    "plot_erf_comparison": (".erf.plots", "plot_comparison"),
    "load_stimuli": (".shapebias", "load_stimuli"),
    "aggregate_16class": (".shapebias", "aggregate_16class"),
    "evaluate_shape_bias": (".shapebias", "evaluate"),
    "analyse_shape_bias": (".shapebias", "analyse"),
    "read_decisions": (".shapebias", "read_decisions"),
    "plot_shape_bias": (".shapebias", "plot_shape_bias"),
    "dwconv2d": (".ops", "dwconv2d"),
    "find_runs": (".results", "find_runs"),
}

__all__ = ["__version__", "ErftoolsError", "create_model", "get_model_info", "list_models", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'erftools' has no attribute {name!r}")
