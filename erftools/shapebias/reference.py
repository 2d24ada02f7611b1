"""Reference decision makers, available offline: human observers, ImageNet CNNs, the RepLKNet paper's Fig. 5, and
Gavrikov et al.'s zero-shot open_clip models (:mod:`erftools.shapebias.published_zeroshot`).

Two small files ship in ``data/shapebias/``:

* ``reference_decisions_summary.json``: erftools' own analysis (this package's code) of every per-trial file of
  Geirhos et al.'s texture-vs-shape repository (``erftools data fetch reference-decisions`` downloads the raw files;
  :func:`build_reference_summary` recomputes the summary from them);
* ``published_fig5.json``: the values of the RepLKNet paper's Fig. 5 (read from the figure's vector data).

:func:`get_reference` returns either kind as a dict with at least ``label``, ``shape_bias``, ``per_category``
(``{category: shape bias}``), ``kind`` and ``source``.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from .._io import ErftoolsError
from .._paths import data_dir, data_file

SUMMARY_FILE = "reference_decisions_summary.json"
PUBLISHED_FILE = "published_fig5.json"
TEXTURE_VS_SHAPE = "rgeirhos/texture-vs-shape"
TEXTURE_VS_SHAPE_COMMIT = "ccd0c01d42c0a8a834e90ec141e7f24fa915dc23"

# file (relative to raw-data/) -> (reference name, display label, description)
REFERENCE_FILES: dict[str, tuple[str, str, str]] = {}
_LAB = "style-transfer-512-nomask-experiment"
_TV = "style-transfer-512-nomask-experiment-trained-CNNs"
for _i in range(1, 11):
    REFERENCE_FILES[f"{_LAB}/{_LAB}_subject-{_i:02d}_session_1.csv"] = (
        f"subject-{_i:02d}", f"subject-{_i:02d}", "human observer, lab experiment of Geirhos et al. (2019)")
for _n, _l in (("alexnet", "AlexNet"), ("googlenet", "GoogLeNet"), ("vgg", "VGG-16")):
    REFERENCE_FILES[f"{_LAB}/{_LAB}_{_n}_session_1.csv"] = (
        f"{_l.lower()}-caffe", f"{_l} (Caffe)", "ImageNet CNN, Caffe model as evaluated in Geirhos et al. (2019)")
for _n, _key, _l in (("alexnet", "alexnet", "AlexNet"), ("densenet121", "densenet121", "DenseNet-121"),
                     ("resnet50", "resnet50", "ResNet-50"), ("resnet101", "resnet101", "ResNet-101"),
                     ("resnet152", "resnet152", "ResNet-152"), ("squeezenet1_1", "squeezenet1-1", "SqueezeNet 1.1"),
                     ("vgg16", "vgg16", "VGG-16")):
    REFERENCE_FILES[f"{_TV}/{_LAB}_{_n}_session-1.csv"] = (
        _key, f"{_l} (torchvision)", "ImageNet CNN, torchvision ImageNet-1k weights")
REFERENCE_FILES[f"{_TV}/{_LAB}_oidv2-resnet101_session-1.csv"] = (
    "oidv2-resnet101", "ResNet-101 (Open Images V2)", "ResNet-101 trained on Open Images V2 (not ImageNet)")


@functools.lru_cache(maxsize=1)
def load_summary() -> dict:
    """The shipped analysis of the reference decision files (see :func:`build_reference_summary`)."""
    return json.loads(data_file("shapebias", SUMMARY_FILE).read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def load_published() -> dict:
    """The RepLKNet paper's Fig. 5 values (overall and per category)."""
    return json.loads(data_file("shapebias", PUBLISHED_FILE).read_text(encoding="utf-8"))


def list_references() -> list[dict]:
    """Every reference: ``[{name, label, kind, shape_bias, source}]`` (computed ones first, then published)."""
    entries = [(name, e, e["source"]) for name, e in load_summary()["references"].items()]
    entries += [(name, e, "published: " + pub["source"]) for pub in _published() for name, e in pub["entries"].items()]
    return [{"name": name, "label": e["label"], "kind": e["kind"], "shape_bias": e["shape_bias"], "source": source}
            for name, e, source in entries]


def _published() -> list[dict]:
    """The published values: the RepLKNet paper's Fig. 5, then Gavrikov et al.'s zero-shot models."""
    from .published_zeroshot import load

    return [load_published(), load()]


def get_reference(name: str) -> dict:
    """One reference by name (``humans``, ``resnet152``, ``subject-03``, ``paper:replknet-31b-in1k``, ...)."""
    key = name.strip().lower()
    refs = load_summary()["references"]
    if key in refs:
        per_category = {c: v["shape_bias"] for c, v in refs[key]["per_category"].items()}
        return dict(refs[key], name=key, per_category=per_category)
    for pub in _published():
        if key in pub["entries"]:
            return dict(pub["entries"][key], name=key, source="published: " + pub["source"])
    names = sorted(refs) + [n for pub in _published() for n in sorted(pub["entries"])]
    raise ErftoolsError(f"unknown reference {name!r}; choose from {', '.join(names)}")


def published_for(model_name: str, weights: str | None = None, prompts_sha256: str | None = None) -> dict | None:
    """The published entry matching a model (registry name), its weights label and, for zero-shot models, the
    sha256 of its prompt templates (Fig. 5 of the RepLKNet paper; Gavrikov et al. for ``openclip:`` models)."""
    name = (model_name or "").lower()
    tag = (weights or "").lower().split("pretrained:", 1)[-1]
    for pub in _published():
        for key, e in pub["entries"].items():
            if e.get("model") and e["model"].lower() == name and tag in [t.lower() for t in e.get("weights_tags", [])] \
                    and (e.get("prompts") or {}).get("sha256") == prompts_sha256:
                return dict(e, name=key)
    return None


# ------------------------------------------------------------------------------------------ building the summary
def build_reference_summary(folder: str | os.PathLike, *, n_boot: int = 10_000, seed: int = 0) -> dict:
    """Analyse every reference file under ``folder`` (the layout of ``erftools data fetch reference-decisions``).

    Returns the content of ``data/shapebias/reference_decisions_summary.json``.
    """
    from .analysis import analyse, analyse_decision_maker, DecisionMaker, read_decisions

    folder = Path(folder)
    refs: dict[str, dict] = {}
    human_rows: list[dict] = []
    human_files: list[str] = []
    for rel, (name, label, desc) in REFERENCE_FILES.items():
        path = folder / rel
        if not path.is_file():
            raise ErftoolsError(f"reference file {path} is missing; run `erftools data fetch reference-decisions`")
        rows = read_decisions(path)
        a = analyse(rows, n_boot=n_boot, seed=seed)
        kind = "human" if name.startswith("subject-") else "network"
        refs[name] = _entry(label, kind, desc, a, [rel])
        if kind == "human":
            human_rows += rows
            human_files.append(rel)
    a = analyse_decision_maker(DecisionMaker("humans", human_rows, "humans"), n_boot=n_boot, seed=seed)
    humans = _entry("humans", "humans", "10 human observers pooled (model-vs-human's 'humans')", a, human_files)
    humans.update(shape_bias_mean_of_subjects=a["shape_bias_mean_of_subjects"],
                  shape_bias_range_of_subjects=a["shape_bias_range_of_subjects"],
                  subjects={s: v["shape_bias"] for s, v in a["subjects"].items()})
    return {
        "about": "Shape bias of the reference decision files, computed by erftools (model-vs-human rules: texture = "
                 "last '-' word of the image name without digits, no-conflict trials dropped from the numerators, "
                 "fractions over all trials). ci95: percentile bootstrap over cue-conflict images.",
        "source_repository": f"https://github.com/{TEXTURE_VS_SHAPE}/tree/{TEXTURE_VS_SHAPE_COMMIT}/raw-data",
        "bootstrap": {"n_boot": n_boot, "seed": seed},
        "references": {"humans": humans, **refs},
    }


def _entry(label: str, kind: str, desc: str, a: dict, files: list[str]) -> dict:
    keep = ("shape_bias", "ci95", "fraction_correct_shape", "fraction_correct_texture", "accuracy_no_conflict",
            "num_trials", "n_no_answer")
    return {"label": label, "kind": kind, "description": desc, "source": "erftools analysis of " + ", ".join(files),
            **{k: a[k] for k in keep}, "files": files,
            "per_category": {c: {k: v[k] for k in ("shape_bias", "fraction_shape", "fraction_texture", "ci95")}
                             for c, v in a["per_category"].items()}}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - maintenance entry point
    """``python -m erftools.shapebias.reference FOLDER [OUT]``: rebuild the shipped summary file."""
    return rebuild_main(argv, build_reference_summary, SUMMARY_FILE)


def rebuild_main(argv: list[str] | None, build, file_name: str) -> int:  # pragma: no cover - maintenance
    """The maintenance entry points: write ``build(FOLDER)`` to ``OUT`` (default: ``data/shapebias/<file_name>``)."""
    import sys

    from .._io import write_json

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[1]) if len(argv) > 1 else data_dir() / "shapebias" / file_name
    write_json(out, build(argv[0]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
