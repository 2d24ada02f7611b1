"""Shape bias on the cue-conflict stimuli (Geirhos et al. 2019), with model-vs-human's exact protocol.

Flat API::

    from erftools.shapebias import load_stimuli, evaluate, aggregate_16class, analyse, read_decisions
    report = load_stimuli()                      # the 1280 images, checked (default: the user cache)
    decisions = evaluate(model, report.stimuli, report.root)
    rows = decision_rows(decisions, "my-model")  # model-vs-human schema
    analyse(rows)["shape_bias"]

``erftools shape-bias`` (``run_model`` / ``run_decision_maker``) writes complete run folders; see docs/shape-bias.md.
Zero-shot open_clip models (``openclip:ARCH``) decide through a text classifier: :mod:`.zeroshot`.
"""
from .._lazy import lazy

# public name -> module (imported on first use: the package itself imports nothing heavy)
_NAMES = {
    "DecisionMaker": ".analysis",
    "analyse": ".analysis",
    "analyse_decision_maker": ".analysis",
    "bootstrap_ci": ".analysis",
    "group_decision_makers": ".analysis",
    "read_decisions": ".analysis",
    "shape_bias": ".analysis",
    "CATEGORIES": ".categories",
    "imagenet_indices": ".categories",
    "imagenet_to_category": ".categories",
    "CSV_COLUMNS": ".decisions",
    "Decision": ".decisions",
    "aggregate_16class": ".decisions",
    "decide": ".decisions",
    "decision_rows": ".decisions",
    "evaluate": ".decisions",
    "write_rows": ".decisions",
    "plot_shape_bias": ".plots",
    "plot_shape_bias_bars": ".plots",
    "get_reference": ".reference",
    "list_references": ".reference",
    "published_for": ".reference",
    "run_decision_maker": ".run",
    "run_model": ".run",
    "NUM_IMAGES": ".stimuli",
    "Stimulus": ".stimuli",
    "StimuliReport": ".stimuli",
    "canonical_stimuli": ".stimuli",
    "check_stimuli": ".stimuli",
    "default_stimuli_dir": ".stimuli",
    "load_stimuli": ".stimuli",
    "parse_stimulus": ".stimuli",
    "texture_category": ".stimuli",
    "fetch_dataset": ".fetch:fetch",
    "CLIP_IMAGENET_TEMPLATES": ".zeroshot",
    "ZeroShotClassifier": ".zeroshot",
    "zero_shot_classifier": ".zeroshot",
}
__getattr__, __dir__ = lazy(__name__, globals(), _NAMES)

__all__ = [
    "CATEGORIES", "CLIP_IMAGENET_TEMPLATES", "CSV_COLUMNS", "NUM_IMAGES", "Decision", "DecisionMaker", "Stimulus", "StimuliReport",
    "aggregate_16class", "analyse", "analyse_decision_maker", "bootstrap_ci", "canonical_stimuli", "check_stimuli",
    "decide", "decision_rows", "default_stimuli_dir", "evaluate", "fetch_dataset", "get_reference",
    "group_decision_makers", "imagenet_indices", "imagenet_to_category", "list_references", "load_stimuli",
    "parse_stimulus", "plot_shape_bias", "plot_shape_bias_bars", "published_for", "read_decisions",
    "run_decision_maker", "run_model", "shape_bias", "texture_category", "write_rows", "ZeroShotClassifier",
    "zero_shot_classifier",
]
