"""Effective receptive fields: aggregated contribution maps, their analysis and plots (RepLKNet paper, section 5.1).

>>> from erftools.erf import compute_erf, area_ratios
>>> result = compute_erf(model, images)            # images: (N, 3, H, W) preprocessed, or an ImageList
>>> area_ratios(result.matrix)                      # thresholds 0.2, 0.3, 0.5, 0.99
"""
from .adapters import FeatureAdapter, feature_map, model_kwargs_for_size
from .analysis import DEFAULT_THRESHOLDS, AreaRatio, area_ratios, format_table, normalize, radial_profile
from .compute import (ErfAccumulator, ErfResult, compute_erf, compute_erfs, contribution_maps, prepare_model,
                      resolve_device)
from .baseline import random_baseline
from .layers import expand_layers, stage_layers
from .statistics import centre_of_mass, contribution_radii, erf_statistics, gaussian_fit
from .theoretical import TheoreticalRF, theoretical_rf, theoretical_rfs

__all__ = ["compute_erf", "ErfResult", "ErfAccumulator", "contribution_maps", "prepare_model", "resolve_device",
           "feature_map", "FeatureAdapter", "model_kwargs_for_size", "area_ratios", "AreaRatio", "normalize",
           "radial_profile", "format_table", "DEFAULT_THRESHOLDS", "run_erf", "load_matrix", "plot_erf",
           "plot_comparison", "compute_erfs", "expand_layers", "stage_layers", "random_baseline", "erf_statistics",
           "gaussian_fit", "contribution_radii", "centre_of_mass", "theoretical_rf", "theoretical_rfs", "TheoreticalRF"]


def __getattr__(name):  # run orchestration and plots import lazily (matplotlib, torch.distributed)
    if name in ("run_erf", "load_matrix", "read_run"):
        from . import run

        return getattr(run, name)
    if name in ("plot_erf", "plot_comparison"):
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'erftools.erf' has no attribute {name!r}")
