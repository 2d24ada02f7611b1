"""Everything a study can know before it computes, checked for every model before the first one runs.

:func:`preflight` is shared by the run and the dry run (``--dry-run`` prints the very lines a run would refuse
with). Per model: its weights are there (:func:`erftools.study.jobs.resolve_weights`), its name resolves, its
``model_kwargs`` construct it (built on PyTorch's ``meta`` device: no memory, no weights), a weights file is a
readable checkpoint that fits it (loaded through :func:`erftools.models.create_model`, as the run will), a cached
download fits it too, and the ERF ``layers`` are modules of it. The inputs: the ERF image folder holds the images
each sampler draws, the cue-conflict stimuli are there and complete (or ``allow_incomplete``). The numbers were
bounded when the file was read (:mod:`erftools.study.spec`, :mod:`erftools._limits`).

Nothing here downloads or writes.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .._io import ErftoolsError
from .jobs import WeightsChoice, images_dir, jobs, resolve_weights, stimuli_dir
from .spec import ModelSpec, Study

log = logging.getLogger(__name__)

__all__ = ["Preflight", "preflight", "cannot_start"]


@dataclass
class Preflight:
    """What the checks found: the inputs' problems, each model's problems, and what the runs will use."""
    input_problems: list = field(default_factory=list)
    model_problems: dict = field(default_factory=dict)  # {model id: [problem, ...]}
    choices: dict = field(default_factory=dict)  # {model id: WeightsChoice}
    img_dir: Path | None = None
    images: dict = field(default_factory=dict)  # {sampler: ImageList}
    stimuli_dir: Path | None = None
    stimuli: object = None  # the StimuliReport (one process only; torchrun processes load their own)

    @property
    def problems(self) -> list[str]:
        return list(self.input_problems) + [f"{mid}: {p}" for mid, ps in self.model_problems.items() for p in ps]


def cannot_start(pre: Preflight, skip_missing: bool = False) -> str | None:
    """The message a study refuses to start with (None when it can start): the run raises it, the dry run
    prints it."""
    lines = pre.input_problems if skip_missing else pre.problems
    if not lines:
        return None
    hint = ("\n(skip_missing=True runs the models that passed these checks)"
            if pre.model_problems and not skip_missing else "")
    return "the study cannot start:\n  " + "\n  ".join(lines) + hint


def preflight(study: Study, models: list[ModelSpec], *, images=None, stimuli=None, weights_files=None,
              weights_dir=None, allow_incomplete: bool = False, nproc_per_node: int = 1) -> Preflight:
    """Check ``models`` (one shard's) and the inputs their runs need; see the module's docstring."""
    pre = Preflight()
    todo = jobs(study, models)
    if any(j.kind == "erf" for j in todo):
        _check_images(study, images, pre)
    if any(j.kind == "shape_bias" for j in todo):
        from ..shapebias.stimuli import load_stimuli

        pre.stimuli_dir = stimuli_dir(study, stimuli)
        try:
            pre.stimuli = load_stimuli(pre.stimuli_dir, allow_incomplete=allow_incomplete)
        except ErftoolsError as exc:
            pre.input_problems.append(f"cue-conflict stimuli: {exc}")
    for m in models:
        choice = resolve_weights(study, m, weights_files, weights_dir)
        pre.choices[m.id] = choice
        problems = [choice.problem] if choice.problem else _check_model(study, m, choice)
        if nproc_per_node > 1 and m.model_kwargs:
            problems.append("has model_kwargs, which the single commands under torchrun cannot take on their "
                            "command line; run it without nproc_per_node")
        if problems:
            pre.model_problems[m.id] = problems
    return pre


def _check_images(study: Study, images, pre: Preflight) -> None:
    from ..images import select_images

    pre.img_dir, problem = images_dir(study, images)
    if problem:
        pre.input_problems.append(problem)
        return
    e = study.erf
    for sampler in e.samplers:
        try:
            chosen = select_images(pre.img_dir, e.num_images, sampler, e.seed, size=e.size)
        except ErftoolsError as exc:
            pre.input_problems.append(f"ERF images: {exc}")
            return
        if len(chosen) < e.num_images:
            pre.input_problems.append(f"ERF images: {chosen.root} holds {chosen.num_available} images, fewer than "
                                      f"num_images = {e.num_images} in [erf]; lower num_images or pass a larger "
                                      "folder (images=DIR)")
            return
        pre.images[sampler] = chosen


def _kwargs(study: Study, m: ModelSpec, kind: str) -> dict:
    if kind != "erf":
        return dict(m.model_kwargs)
    from ..erf import model_kwargs_for_size

    return {**model_kwargs_for_size(m.name, study.erf.size), **m.model_kwargs}


def _on_meta(name: str, weights, **kwargs):
    """``create_model`` on the meta device (no memory for the parameters, nothing computed), warnings muted (loading
    real tensors into meta parameters warns that the copy is a no-op)."""
    import torch

    from ..models import create_model

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return create_model(name, weights, **kwargs)


def describe(exc: Exception) -> str:
    """An error as a study reports it: erftools' own message, else the exception's type and message."""
    return str(exc) if isinstance(exc, ErftoolsError) else f"{type(exc).__name__}: {exc}"


def _check_model(study: Study, m: ModelSpec, choice: WeightsChoice) -> list[str]:
    """The problems of one model: name, model_kwargs, weights file, layers (empty when it can run)."""
    from ..erf.layers import expand_layers
    from ..models import resolve

    try:
        entry, name_tag = resolve(m.name)
    except ErftoolsError as exc:
        return [f"model {m.name!r}: {exc}"]
    problems: list[str] = []
    checked: list[dict] = []
    for kind in study.measurements(m):
        kwargs = _kwargs(study, m, kind)
        if kwargs in checked:
            continue
        checked.append(kwargs)
        try:
            model = _on_meta(m.name, "random", **kwargs)
        except Exception as exc:  # noqa: BLE001 - any constructor error is the model_kwargs' problem
            what = f"model_kwargs {m.model_kwargs}" if m.model_kwargs else "the default arguments"
            return [f"{what} do not construct {m.name} ({describe(exc)}); fix model_kwargs of model {m.id}"]
        if kind == "erf" and study.erf.layers:
            try:
                expand_layers(model, study.erf.layers if isinstance(study.erf.layers, str) else list(study.erf.layers))
            except ErftoolsError as exc:
                problems.append(f"[erf] layers: {exc}")
        problem = _check_weights(m, choice, entry, name_tag, kwargs)
        if problem and problem not in problems:
            problems.append(problem)
    return problems


def _weights_file(choice: WeightsChoice, entry, name_tag) -> Path | None:
    """The local file the weights will be read from, when there is one now (a file, or a cached download)."""
    from ..models._weights import hub_checkpoint_path

    w = choice.weights
    if w in (None, "random"):
        return None
    if w.startswith(("http://", "https://")):
        p = hub_checkpoint_path(w)
        return p if p.is_file() else None
    if os.path.isfile(w):
        return Path(w)
    src = entry.weight_source(name_tag if w == "pretrained" else w)
    if src is not None and src.url and hub_checkpoint_path(src.url).is_file():
        return hub_checkpoint_path(src.url)
    return None


def _check_weights(m: ModelSpec, choice: WeightsChoice, entry, name_tag, kwargs: dict) -> str | None:
    w = choice.weights
    if w not in (None, "random", "pretrained") and not w.startswith(("http://", "https://")) \
            and not os.path.isfile(w) and entry.weight_source(w) is None:
        tags = ", ".join(x.tag for x in entry.weights) or "none"
        return (f"weights {w!r} are neither 'random', 'pretrained', a weight tag of {entry.name} ({tags}), a URL, "
                "nor an existing file; fix weights of model " + m.id)
    src = None if w in (None, "random") else entry.weight_source(name_tag if w == "pretrained" else w)
    if w == "pretrained" and src is None:
        src = next((x for x in entry.weights if x.manual), None)
        if src is None:
            return f"{entry.name} has no published pretrained weights; set weights = \"random\" or a file for {m.id}"
    if src is not None and src.manual and not src.downloadable and not os.path.isfile(w):
        return (f"{src.tag}: only on Google Drive ({src.manual}); download it and pass "
                f"weights_files={{'{m.id}': PATH}}")
    path = _weights_file(choice, entry, name_tag)
    if path is None:
        return None
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"the weights file {path} cannot be read ({exc.strerror or exc})"
    if size == 0:
        return (f"the weights file {path} is empty (0 bytes): the download or copy did not finish; download it "
                "again")
    try:
        _on_meta(m.name, str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load is this model's problem
        return describe(exc)
    return None
