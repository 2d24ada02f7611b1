"""erftools: effective receptive fields and shape bias of vision models.

The public API is flat: everything a user needs is importable from ``erftools``::

    from erftools import create_model, compute_erf, area_ratios, evaluate_shape_bias, analyse_shape_bias
"""
from ._io import ErftoolsError  # noqa: F401
from ._version import __version__  # noqa: F401

# name -> (module, attribute); imported on first use, so that `import erftools` (and `erftools --help`) import
# neither torch nor timm
_LAZY = {
    "create_model": (".models", "create_model"),
    "get_model_info": (".models", "get_model_info"),
    "list_models": (".models", "list_models"),
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

__all__ = ["__version__", "ErftoolsError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'erftools' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
