"""The results layer: the on-disk format of a run, and the one place that reads and views result folders.

A *run folder* holds the results of one measurement of one model:

ERF run (``erftools erf --out DIR``)
    ``erf.json``   the record (:class:`ErfRecord`, ``"kind": "erf"``): model info, weights source and sha256, image
                   list and its hash, size, counts, area ratios, radial profile, timings, versions
    ``erf.npy``    float32 (H, W) mean contribution matrix (``stored_downsample`` > 1 in the record when it was
                   block-summed for display, e.g. the committed examples)
    ``erf.png``    the heatmap

Shape-bias run (``erftools shape-bias --out DIR``)
    ``summary.json``   the record (:class:`ShapeBiasRecord`, ``"kind": "shape-bias"``): shape bias, fractions, per
                       category, ci95, ...
    ``decisions.csv``  per-trial decisions, model-vs-human schema
    ``*.png``          plots

Every record is written atomically and carries ``"schema": 1`` and ``"complete": true`` only once everything else
in the folder is written, so a reader can tell a finished run from an interrupted one.

Modules (``docs/results.md``):

* :mod:`~erftools.results.records`: the typed records (the schema; standard library only, the engines import it);
* :mod:`~erftools.results.store`: run discovery, paths confined to the results folder, a run's files;
* :mod:`~erftools.results.views`: tables and comparisons computed from records (imported on use: numpy, pandas);
* :mod:`~erftools.results.maintenance`: shrinking matrices and portable example copies (the only writer);
* :mod:`~erftools.results.text`: text from result files shown safely (Markdown, matplotlib).
"""
# ruff: noqa: F401  (the names beyond __all__ stay importable from here for the readers that use them)
from __future__ import annotations

from .records import (COMBINED_KIND, ERF_CHECKPOINT, ERF_FIGURE, ERF_KIND, ERF_MATRIX, ERF_RECORD, HUMAN, HUMANS,
                      MAKER_KINDS, MODEL, NETWORK, PUBLISHED, RECORD_FILES, RECORD_TYPES, RESUME_STATE, SB_COMBINED,
                      SB_DECISIONS, SB_KIND, SB_PARTIAL, SB_RECORD, SCHEMA, ErfRecord, Record, ResultError,
                      ShapeBiasRecord, base_record, checked_path, maker_kind, read_json_record, record_from_dict, slug,
                      validate)
from .store import (ENV_RESULTS, STUDY_KIND, STUDY_RECORD, VERDICTS, Interrupted, Listing, Run, StudyModel,
                    StudyResult, StudyRow, block_reduce, default_results_dir, display_path, find_interrupted,
                    find_runs, find_studies, is_baseline_run, layer_entries, layer_entry, layer_matrix_name,
                    list_runs, load_baseline, load_decisions, load_erf_matrix, load_layer_matrix, load_record,
                    load_run, read_record, read_study, results_root, safe_path, scan, source_root, stimuli_dir_for,
                    stimulus_path)
from .text import md_code, md_text, plot_text

#: what a user calls (the file names, kinds and helpers stay importable from their modules and from here)
__all__ = [
    "ErfRecord", "ShapeBiasRecord", "Record", "ResultError", "Run", "Listing", "StudyResult",
    "find_runs", "list_runs", "load_run", "read_record", "load_record", "read_study", "find_studies",
    "find_interrupted", "load_erf_matrix", "load_layer_matrix", "layer_entries", "load_baseline", "load_decisions",
    "results_root", "default_results_dir", "checked_path", "display_path", "maker_kind", "slug",
]
