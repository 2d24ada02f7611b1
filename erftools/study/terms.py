"""Engine and model messages in a study's own words: the single commands' flags (``--weights PATH``) and library
arguments (``allow_low_precision=True``) that a study does not have become the study's keys and arguments, which
the ``erftools study`` command then spells as its flags (:mod:`erftools.commands.study`, :mod:`erftools._advice`)."""
from __future__ import annotations

import re

#: (pattern, replacement); ``{id}`` is the model's id in the study
STUDY_TERMS = (
    (r"weights=PATH \(--weights PATH\)", "weights_files={{'{id}': PATH}}"),
    (r"(?:--weights|weights=) ?PATH\b", "weights_files={{'{id}': PATH}}"),
    (r"(?:--weights random|weights='random')", "weights = \"random\" for model {id} in the study file"),
    (r"\ballow_low_precision=True\b", "allow_low_precision = true in the study's [erf] table"),
    (r"\bprecision='fp32'", "precision = \"fp32\" in the study's [erf] table"),
    (r"\bprepare=False\b", "prepare=False (a study has no such key: run this model with `erftools erf --no-prepare`)"),
    (r"\bchoose another output folder\b", "choose another results folder (results=DIR)"),
    (r"\buse smaller images\b", "use a smaller size in the study's [erf] table"),
)

__all__ = ["STUDY_TERMS", "in_study_terms"]


def in_study_terms(message: str, model_id: str) -> str:
    """``message`` with the single commands' advice replaced by the study's (see :data:`STUDY_TERMS`)."""
    for pattern, replacement in STUDY_TERMS:
        message = re.sub(pattern, replacement.format(id=model_id).replace("\\", "\\\\"), message)
    return message
