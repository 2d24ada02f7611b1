"""Effective receptive fields: aggregated contribution maps, their analysis and plots (RepLKNet paper, section 5.1).

>>> from erftools.erf import compute_erf, area_ratios
>>> result = compute_erf(model, images)            # images: (N, 3, H, W) preprocessed, or an ImageList
>>> area_ratios(result.matrix)                      # thresholds 0.2, 0.3, 0.5, 0.99
"""
from .._lazy import lazy

# public name -> module (imported on first use: `import erftools.erf` and `erftools --help` stay light)
_NAMES = {
    **dict.fromkeys(["FeatureAdapter", "feature_map", "model_kwargs_for_size"], ".adapters"),
    **dict.fromkeys(["DEFAULT_THRESHOLDS", "AreaRatio", "area_ratios", "format_table", "normalize",
                     "radial_profile"], ".analysis"),
    **dict.fromkeys(["ErfAccumulator", "ErfResult", "compute_erf", "compute_erfs", "accumulate_erfs",
                     "contribution_maps", "prepare_model", "resolve_device"], ".compute"),
    "random_baseline": ".baseline",
    **dict.fromkeys(["expand_layers", "stage_layers"], ".layers"),
    **dict.fromkeys(["centre_of_mass", "contribution_radii", "erf_statistics", "gaussian_fit"], ".statistics"),
    **dict.fromkeys(["TheoreticalRF", "theoretical_rf", "theoretical_rfs"], ".theoretical"),
    **dict.fromkeys(["run_erf", "load_matrix", "read_run"], ".run"),
    "plot_erf": ".plots", "plot_comparison": ".plots", "plot_layer_growth": ".plots", "plot_size_sweep": ".plots",
    **dict.fromkeys(["OBJECTIVES", "REDUCTIONS"], ".objectives"),
    **dict.fromkeys(["run_size_sweep", "parse_sizes"], ".sweep"),
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy(__name__, globals(), _NAMES)
