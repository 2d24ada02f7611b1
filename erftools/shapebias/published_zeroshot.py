"""Published zero-shot shape biases: Gavrikov et al. (ICLR 2025), from their per-trial data, as offline references.

``data/shapebias/published_zeroshot.json`` holds erftools' analysis (:func:`erftools.shapebias.analysis.analyse`, the
model-vs-human rules) of the open_clip files in ``raw-data/clip/`` of ``paulgavrikov/vlm_shapebias`` (one decision
per stimulus; columns ``image,response,...``): per model, pretrained tag and prompt set the pooled shape bias and the
per-category values. Rebuild it with ``python -m erftools.shapebias.published_zeroshot RAW_DATA_CLIP_DIR``.

An entry names its ``model`` (``openclip:ARCH``), ``weights_tags`` and ``prompts`` (``sha256`` of the template list,
as :func:`erftools.shapebias.zeroshot.prompts_record` computes it), so a zero-shot run of the same model, weights and
prompts records the published value next to its own (:func:`erftools.shapebias.reference.published_for`).
"""
from __future__ import annotations

import csv
import functools
import json
import os
import re
from pathlib import Path

from .._io import ErftoolsError
from .._paths import data_file

FILE = "published_zeroshot.json"
REPOSITORY = "paulgavrikov/vlm_shapebias"
COMMIT = "459198f"
#: raw-data/clip file stem (without the prompt suffix) -> (open_clip architecture, pretrained tag)
MODELS = {"clip_RN50_openai": ("RN50", "openai"), "clip_RN101_openai": ("RN101", "openai"),
          "ViT_L_14_openai": ("ViT-L-14", "openai"), "ViT_L_14_336_openai": ("ViT-L-14-336", "openai"),
          "EVA01_g_14_laion400m_s11b_b41k": ("EVA01-g-14", "laion400m_s11b_b41k"),
          "EVA02_E_14_plus_laion2b_s9b_b144k": ("EVA02-E-14-plus", "laion2b_s9b_b144k")}
#: file-name suffix -> (name suffix, the templates: None = the 80 CLIP ImageNet templates)
PROMPTS = {"_None": ("", None), "_a_photo_of_a_CLS.": ("-photo", ["a photo of a {}."]), "_CLS": ("-bare", ["{}"])}


@functools.lru_cache(maxsize=1)
def load() -> dict:
    """The shipped file (``{"about", "source", "entries": {name: entry}}``)."""
    return json.loads(data_file("shapebias", FILE).read_text(encoding="utf-8"))


def read_rows(path: Path) -> list[dict]:
    """A vlm_shapebias decisions file as model-vs-human rows (``imagename`` = ``image`` + ``.png``)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, r in enumerate(csv.DictReader(fh), start=1):
            image = r["image"]
            rows.append({"subj": path.stem, "session": "1", "trial": str(i), "rt": "NaN",
                         "object_response": r["response"], "category": re.sub(r"\d", "", image.split("-")[0]),
                         "condition": "0", "imagename": image + ".png"})
    return rows


def build(folder: str | os.PathLike) -> dict:
    """Analyse the open_clip files of vlm_shapebias' ``raw-data/clip/`` into the content of :data:`FILE`."""
    from .analysis import analyse
    from .zeroshot import prompts_record, resolve_templates

    folder = Path(folder)
    entries = {}
    for stem, (arch, tag) in MODELS.items():
        for suffix, (name_suffix, templates) in PROMPTS.items():
            path = folder / f"{stem}{suffix}.csv"
            if not path.is_file():
                raise ErftoolsError(f"{path} is missing: pass the raw-data/clip folder of {REPOSITORY}")
            a = analyse(read_rows(path), n_boot=1000)
            pr = prompts_record(resolve_templates(templates))
            what = "80 CLIP templates" if templates is None else f"prompt {templates[0]!r}"
            entries[f"gavrikov:{arch.lower()}-{tag}{name_suffix}"] = {
                "label": f"{arch} {tag}, {what} (Gavrikov et al.)", "kind": "published", "model": f"openclip:{arch}",
                "weights_tags": [tag], "prompts": {k: pr[k] for k in ("set", "n", "sha256")},
                "shape_bias": round(a["shape_bias"], 4), "num_trials": a["num_trials"], "file": path.name,
                "per_category": {c: None if v["shape_bias"] is None else round(v["shape_bias"], 4)
                                 for c, v in a["per_category"].items()}}
    return {"about": "Zero-shot shape bias of open_clip models from the per-trial data of Gavrikov et al., computed "
                     "by erftools (model-vs-human rules) from raw-data/clip/ of " + REPOSITORY + " at " + COMMIT,
            "source": "Gavrikov et al., Are Vision Language Models Texture or Shape Biased and Can We Steer Them?, "
                      "ICLR 2025 (per-trial data)",
            "entries": entries}


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - maintenance entry point
    """``python -m erftools.shapebias.published_zeroshot RAW_DATA_CLIP_DIR [OUT]``."""
    from .reference import rebuild_main

    return rebuild_main(argv, build, FILE)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
