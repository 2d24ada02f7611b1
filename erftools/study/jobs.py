"""The runs a study consists of (one per model, measurement and ERF sampler), their folders, shards, weights and
the torchrun command lines. Shared by the plan (``--dry-run``) and the runner."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .folder import results_folder as results_dir  # the study's results folder, checked
from .spec import BUNDLED, ModelSpec, Study, StudyError

ENV_WEIGHTS_DIR = "ERFTOOLS_WEIGHTS_DIR"
DEFAULT_RESULTS = Path("results") / "studies"

__all__ = ["Job", "jobs", "parse_shard", "shard_models", "results_dir", "resolve_weights", "WeightsChoice",
           "erf_command", "shape_bias_command", "ENV_WEIGHTS_DIR"]


@dataclass(frozen=True)
class Job:
    """One run of a study: a model through one measurement (the ERF once per sampler)."""
    model: ModelSpec
    kind: str  # "erf" or "shape_bias"
    sampler: str | None = None
    size: int | None = None  # one size of an input-size sweep (``size = [..]``); None: the study's one size

    @property
    def folder(self) -> str:
        """The run folder, relative to the study's results folder (a sweep: ``<id>/erf-<sampler>/size-<N>``, the
        layout of ``erftools erf --size A,B``)."""
        if self.kind != "erf":
            return f"{self.model.id}/shape-bias"
        return f"{self.model.id}/erf-{self.sampler}" + (f"/size-{self.size}" if self.size else "")

    @property
    def name(self) -> str:
        if self.kind != "erf":
            return "shape bias"
        return f"ERF ({self.sampler}, {self.size} px)" if self.size else f"ERF ({self.sampler})"

    def series_label(self, study: Study) -> str:
        """The model's label in figures: with the sampler when the study has several, and its ERF variant."""
        from ..erf.objectives import label_with_variant

        if self.kind != "erf":
            return self.model.label
        label = f"{self.model.label} ({self.sampler})" if len(study.erf.samplers) > 1 else self.model.label
        return label_with_variant(label, study.erf.objective, study.erf.reduction)

    def label(self, study: Study) -> str:
        label = self.series_label(study)
        return f"{label}, {self.size} px" if self.size else label

    def input_size(self, study: Study) -> int:
        return self.size or study.erf.size

    def seed(self, study: Study) -> int:
        spec = study.erf if self.kind == "erf" else study.shape_bias
        return self.model.seed if self.model.seed is not None else spec.seed


def jobs(study: Study, models=None) -> list[Job]:
    """Every run of ``models`` (default: all the study's), in file order."""
    out = []
    for m in (study.models if models is None else models):
        for kind in study.measurements(m):
            if kind == "erf":
                sizes = study.erf.sizes or (None,)
                out += [Job(m, "erf", s, size) for s in study.erf.samplers for size in sizes]
            else:
                out.append(Job(m, kind))
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) as ``(i, n)``; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise StudyError(f"shard {text!r}: write i/n with 1 <= i <= n, e.g. 1/2 and 2/2 on two machines")
    return int(m.group(1)), int(m.group(2))


def shard_models(study: Study, shard: tuple[int, int] | None) -> list[ModelSpec]:
    """The models of one shard: every n-th model of the file starting at the i-th (models without public
    weights, which never run, are left out of the count so the work is split evenly)."""
    runnable = [m for m in study.models if not m.unpublished]
    return runnable if shard is None else runnable[shard[0] - 1::shard[1]]


@dataclass(frozen=True)
class WeightsChoice:
    """What a model runs with: ``weights`` (for create_model) or the ``problem`` that keeps it from running."""
    weights: str | None
    problem: str | None = None
    how: str = ""  # where the weights come from, for the plan


def _looks_like_path(w: str) -> bool:
    return not w.startswith(("http://", "https://")) and (
        "/" in w or os.sep in w or w.endswith((".pth", ".pt", ".bin", ".safetensors", ".ckpt")))


def resolve_weights(study: Study, model: ModelSpec, weights_files: dict | None = None,
                    weights_dir: str | os.PathLike | None = None) -> WeightsChoice:
    """The weights of ``model``: ``weights_files[model.id]``, the study's ``weights`` (paths relative to the study
    file), or for weights that are only a manual download the expected file in ``weights_dir`` (default
    ``$ERFTOOLS_WEIGHTS_DIR``)."""
    weights_files = weights_files or {}
    if model.unpublished:
        return WeightsChoice(None, model.note or "no public weights", "none published")
    if model.id in weights_files:
        p = Path(weights_files[model.id]).expanduser()
        if not p.is_file():
            raise StudyError(f"the weights file given for {model.id} ({p}) does not exist")
        return WeightsChoice(str(p.resolve()), None, f"file {p}")
    w = model.weights
    if w is not None:
        if _looks_like_path(w):
            p = study.input_path(w)
            if not p.is_file():
                return WeightsChoice(None, f"the weights file {p} named in the study does not exist", "file")
            return WeightsChoice(str(p.resolve()), None, f"file {p}")
        return WeightsChoice(w, None, w)
    d = model.download or {}
    folder = weights_dir if weights_dir is not None else os.environ.get(ENV_WEIGHTS_DIR)
    if folder:
        p = Path(folder).expanduser() / d["file"]
        if p.is_file():
            return WeightsChoice(str(p.resolve()), None, f"file {p}")
    where = f" (not in {folder})" if folder else ""
    return WeightsChoice(None, f"weights needed{where}: download {d['url']}, save it as {d['file']} and pass "
                               f"weights_files={{'{model.id}': PATH}} or weights_dir=DIR (the folder holding "
                               f"{d['file']})", "manual download")


def _torchrun(job: Job, command: str, nproc: int) -> list[str]:
    """``torchrun ... erftools <command>`` on ``nproc`` processes; refused for a model with ``model_kwargs``."""
    if job.model.model_kwargs:
        raise StudyError(f"model {job.model.id} has model_kwargs, which `erftools {command}` cannot take on its "
                         "command line; run it without nproc_per_node")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(nproc)),
            "-m", "erftools.cli", command]


def erf_command(study: Study, job: Job, out: Path, weights: str, images: Path | None, device: str,
                nproc: int) -> list[str]:
    """The ``torchrun ... erftools erf`` command of an ERF run on ``nproc`` processes of this machine."""
    e = study.erf
    cmd = _torchrun(job, "erf", nproc) + [
        "--model", job.model.name, "--weights", weights, "--num-images", str(e.num_images), "--sampler", job.sampler,
        "--seed", str(job.seed(study)), "--size", str(job.input_size(study)), "--out", str(out), "--label",
        job.label(study), "--device", device, "--precision", e.precision, "--objective", e.objective, "--reduce",
        e.reduction, "--no-progress", "--thresholds", *[f"{t:g}" for t in e.thresholds]]
    if images is not None:
        cmd += ["--images", str(images)]
    if e.batch_size:
        cmd += ["--batch-size", str(e.batch_size)]
    if e.conv_backend:
        cmd += ["--conv-backend", e.conv_backend]
    if e.layers:
        cmd += ["--layers", e.layers if isinstance(e.layers, str) else ",".join(e.layers)]
    if e.allow_low_precision:
        cmd.append("--allow-low-precision")
    return cmd


def shape_bias_command(study: Study, job: Job, out: Path, weights: str, stimuli: Path | None, device: str,
                       nproc: int, allow_incomplete: bool) -> list[str]:
    """The ``torchrun ... erftools shape-bias`` command of a shape-bias run on ``nproc`` processes."""
    s = study.shape_bias
    cmd = _torchrun(job, "shape-bias", nproc) + [
        "--model", job.model.name, "--weights", weights, "--out", str(out), "--label", job.label(study),
        "--batch-size", str(s.batch_size), "--device", device, "--precision", s.precision, "--seed",
        str(job.seed(study)), "--bootstrap", str(s.bootstrap), "--reference", "humans", "--no-progress"]
    if stimuli is not None:
        cmd += ["--stimuli", str(stimuli)]
    if allow_incomplete:
        cmd.append("--allow-incomplete")
    return cmd


def images_dir(study: Study, images: str | os.PathLike | None) -> tuple[Path | None, str | None]:
    """(the ERF image folder or None for the bundled photographs, a problem or None)."""
    value = str(images) if images is not None else study.erf.images
    if value is None:
        return None, ("no image folder: pass images=DIR (the ImageNet validation folder, class sub-folders as in "
                      "val/) or set images in the study's [erf] table")
    if value == BUNDLED:
        return None, None
    p = Path(images).expanduser() if images is not None else study.input_path(value)
    if not p.is_dir():
        return p, f"the image folder {p} does not exist"
    return p, None


def stimuli_dir(study: Study, stimuli: str | os.PathLike | None) -> Path:
    from ..shapebias.stimuli import default_stimuli_dir

    if stimuli is not None:
        return Path(stimuli).expanduser()
    if study.shape_bias.stimuli:
        return study.input_path(study.shape_bias.stimuli)
    return default_stimuli_dir()


def check_weights_ids(study: Study, weights_files: dict | None) -> None:
    """Every key of ``weights_files`` must be a model id of the study."""
    ids = [m.id for m in study.models]
    for mid in weights_files or {}:
        if mid not in ids:
            raise StudyError(f"weights_files names {mid!r}, which is not a model id of study {study.name}; its ids: "
                             + ", ".join(ids))
