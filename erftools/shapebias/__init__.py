"""Shape bias on the cue-conflict stimuli (Geirhos et al. 2019), with model-vs-human's exact protocol.

Flat API::

    from erftools.shapebias import load_stimuli, evaluate, aggregate_16class, analyse, read_decisions
    report = load_stimuli()                      # the 1280 images, checked (default: the user cache)
    decisions = evaluate(model, report.stimuli, report.root)
    rows = decision_rows(decisions, "my-model")  # model-vs-human schema
    analyse(rows)["shape_bias"]

``erftools shape-bias`` (``run_model`` / ``run_decision_maker``) writes complete run folders; see docs/shape-bias.md.
"""
from .analysis import (DecisionMaker, analyse, analyse_decision_maker, bootstrap_ci, group_decision_makers,
                       read_decisions, shape_bias)
from .categories import CATEGORIES, imagenet_indices, imagenet_to_category
from .decisions import CSV_COLUMNS, Decision, aggregate_16class, decide, decision_rows, evaluate, write_rows
from .fetch import fetch as fetch_dataset
from .plots import plot_shape_bias, plot_shape_bias_bars
from .reference import get_reference, list_references, published_for
from .run import run_decision_maker, run_model
from .stimuli import (NUM_IMAGES, Stimulus, StimuliReport, canonical_stimuli, check_stimuli, default_stimuli_dir,
                      load_stimuli, parse_stimulus, texture_category)

__all__ = [
    "CATEGORIES", "CSV_COLUMNS", "NUM_IMAGES", "Decision", "DecisionMaker", "Stimulus", "StimuliReport",
    "aggregate_16class", "analyse", "analyse_decision_maker", "bootstrap_ci", "canonical_stimuli", "check_stimuli",
    "decide", "decision_rows", "default_stimuli_dir", "evaluate", "fetch_dataset", "get_reference",
    "group_decision_makers", "imagenet_indices", "imagenet_to_category", "list_references", "load_stimuli",
    "parse_stimulus", "plot_shape_bias", "plot_shape_bias_bars", "published_for", "read_decisions",
    "run_decision_maker", "run_model", "shape_bias", "texture_category", "write_rows",
]
