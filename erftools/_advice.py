"""Library errors name arguments (``overwrite=True``), for notebook users; on the command line they become flags
(``--overwrite``). One table for every command; a command may add its own patterns."""
from __future__ import annotations

import re
from typing import Iterable

#: library errors name arguments (for notebook users); on the command line they become flags
FLAG_ADVICE = (
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"\bresume=True\b"), "--resume"),
    (re.compile(r"\bdevice='cpu'"), "--device cpu"),
    (re.compile(r"\bstimuli_dir=DIR\b"), "--stimuli DIR"),
    (re.compile(r"\ballow_incomplete=True\b"), "--allow-incomplete"),
    (re.compile(r"\bmirror=DIR\b"), "--mirror DIR"),
    (re.compile(r"\bbase_url=URL\b"), "--base-url URL"),
    (re.compile(r"\bprepare=False\b"), "--no-prepare"),
    (re.compile(r"\bresults=DIR\b"), "--results DIR"),
    (re.compile(r"\ballow_low_precision=True\b"), "--allow-low-precision"),
    (re.compile(r"\bprecision='fp32'"), "--precision fp32"),
)


def flag_advice(message: str, extra: Iterable[tuple[re.Pattern, str]] = ()) -> str:
    """A library error message with its argument advice spelled as command-line flags (``extra``: a command's own
    patterns, applied first)."""
    for pattern, flag in (*extra, *FLAG_ADVICE):
        message = pattern.sub(flag, message)
    return message
