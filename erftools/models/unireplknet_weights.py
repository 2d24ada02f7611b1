"""UniRepLKNet's registry entries (one per published file) and its checkpoint layouts; imports no torch.

The files are the official ones on the Hugging Face hub (``DingXiaoH/UniRepLKNet``, Apache-2.0), all in the training
structure, some wrapped in ``{'model': ...}``. Their SHA-256 are the hub's Git LFS object ids, as the hub lists them
(the file pages' "Git LFS Details" and the LFS pointers of commits 2a2717f and ef79e01); a file whose hash erftools
could not read from a published page is *unpinned* (``sha256=None``): it is downloaded with a warning that it is not
verified, and the run records the digest of the file it got.

Layouts read (:func:`convert_unireplknet_keys`): bare, ``model``/``state_dict`` wrapped, ``module.`` (DataParallel)
prefixed; OpenMMLab backbone files (``backbone.`` prefix, ``norm0..3``; detector/segmentor heads dropped); training or
deploy structure (:func:`is_deploy_state_dict`).
"""
from __future__ import annotations

HF_REPO = "DingXiaoH/UniRepLKNet"
HF_URL = "https://huggingface.co/DingXiaoH/UniRepLKNet/resolve/main/"
LICENSE = "apache-2.0"
#: the official evaluation transform below 384 px: bicubic resize to size / 0.875, centre crop (at 384: resize only)
CROP_PCT_BELOW_384 = 0.875

# tag -> (file name, SHA-256 of the hub's LFS object or None, input size, classes, description)
_FILES: dict[str, list[tuple]] = {
    "unireplknet-A": [("in1k", "unireplknet_a_in1k_224_acc77.03.pth",
                       "a0ef11d8514590413a11493850e4882bb2c15c4c0203f97481158c7c58d76128", 224, 1000,
                       "ImageNet-1K, 224px (official, 77.03%)")],
    "unireplknet-F": [("in1k", "unireplknet_f_in1k_224_acc78.58.pth",
                       "b070ba01e853df306ac9d945f3c3592506595908adc1333d09983209fef7d5c8", 224, 1000,
                       "ImageNet-1K, 224px (official, 78.58%)")],
    "unireplknet-P": [("in1k", "unireplknet_p_in1k_224_acc80.23.pth",
                       "36363a5df396c0550b67208c50cd1936d7154839ad8f791937e952b6093a83d4", 224, 1000,
                       "ImageNet-1K, 224px (official, 80.23%)")],
    "unireplknet-N": [("in1k", "unireplknet_n_in1k_224_acc81.64.pth", None, 224, 1000,
                       "ImageNet-1K, 224px (official, 81.64%)")],
    "unireplknet-T": [("in1k", "unireplknet_t_in1k_224_acc83.21.pth", None, 224, 1000,
                       "ImageNet-1K, 224px (official, 83.21%)")],
    "unireplknet-S": [("in1k", "unireplknet_s_in1k_224_acc83.91.pth", None, 224, 1000,
                       "ImageNet-1K, 224px (official, 83.91%)"),
                      ("in22k", "unireplknet_s_in22k_pretrain.pth",
                       "0ce556076536e876e407592fce67f5cbdb6245c6dfbc35e8cdc25b51a3ccfe43", 224, 21841,
                       "ImageNet-22K pre-trained, 21841 classes, 224px (official)"),
                      ("in22k-ft-in1k-384", "unireplknet_s_in22k_to_in1k_384_acc86.44.pth",
                       "120fd52aeb737512807600c53d89d86b0f2e81172b8049768e7ce52c389accfa", 384, 1000,
                       "ImageNet-22K pre-trained, 1K fine-tuned, 384px (official, 86.44%)")],
    "unireplknet-B": [("in22k", "unireplknet_b_in22k_pretrain.pth",
                       "aa3d4d70eb992e5e9f4dee0a4542fbad71c3cea7e2f08c03720c7308c1d62c51", 224, 21841,
                       "ImageNet-22K pre-trained, 21841 classes, 224px (official)"),
                      ("in22k-ft-in1k-384", "unireplknet_b_in22k_to_in1k_384_acc87.40.pth",
                       "cb37d591f7eec89bc08b49b727798722aa9f4c465c7358936f6573d568dcab2a", 384, 1000,
                       "ImageNet-22K pre-trained, 1K fine-tuned, 384px (official, 87.40%)")],
    "unireplknet-L": [("in22k", "unireplknet_l_in22k_pretrain.pth",
                       "b46656fb33fab335b1a2844822c76b325ba4c404186303649d84762e08ef5fb2", 224, 21841,
                       "ImageNet-22K pre-trained, 21841 classes, 224px (official)"),
                      ("in22k-ft-in1k-384", "unireplknet_l_in22k_to_in1k_384_acc87.88.pth", None, 384, 1000,
                       "ImageNet-22K pre-trained, 1K fine-tuned, 384px (official, 87.88%)")],
    "unireplknet-XL": [("in22k", "unireplknet_xl_in22k_pretrain.pth", None, 224, 21841,
                        "ImageNet-22K pre-trained, 21841 classes, 224px (official)"),
                       ("in22k-ft-in1k-384", "unireplknet_xl_in22k_to_in1k_384_acc87.96.pth",
                        "a5fb3d98f978dc4925cd50d3f3f8fd0c7dc5e47a8b4f22a68decb0c56fadf268", 384, 1000,
                        "ImageNet-22K pre-trained, 1K fine-tuned, 384px (official, 87.96%)")],
}
# the deploy parameter counts of the official code (unireplknet_keys.json), for the descriptions
_DEPLOY_M = {"A": 4.4, "F": 6.2, "P": 10.7, "N": 18.3, "T": 31.0, "S": 55.6, "B": 98.0, "L": 218.5, "XL": 386.5}


def num_classes_of(name: str, tag: str) -> int | None:
    """The number of classes of a published file (21841 for the ImageNet-22K pre-training)."""
    for t, _f, _s, _size, classes, _d in _FILES.get(name, ()):
        if t == tag:
            return classes
    return None


def unireplknet_entries() -> list:
    """The registry entries ``unireplknet-A`` .. ``unireplknet-XL`` (called by :mod:`erftools.models._registry`)."""
    from ._registry import ModelEntry, Preprocessing, WeightSource

    entries = []
    for name, files in _FILES.items():
        weights = tuple(WeightSource(tag, desc + ("" if sha else "; unpinned: no published SHA-256 found, "
                                                  "downloaded unverified"),
                                     url=HF_URL + fname, sha256=sha, input_size=size,
                                     layout="official")
                        for tag, fname, sha, size, _classes, desc in files)
        variant = name.split("-", 1)[1]
        default = "in1k" if any(w.tag == "in1k" for w in weights) else "in22k-ft-in1k-384"
        size = 224 if default == "in1k" else 384
        entries.append(ModelEntry(name, "unireplknet", name, preprocessing=Preprocessing(input_size=size),
                                  weights=weights, default_weights=default,
                                  description=f"UniRepLKNet-{variant} (kernels 3/13 with dilated re-param; "
                                              f"{_DEPLOY_M[variant]}M deploy params)"))
    return entries


_HEAD_PREFIXES = ("decode_head.", "auxiliary_head.", "neck.", "rpn_head.", "roi_head.", "bbox_head.",
                  "data_preprocessor.")


def convert_unireplknet_keys(sd: dict) -> dict:
    """OpenMMLab backbone keys (``backbone.`` prefix; task heads dropped) -> the official layout; others pass."""
    if not any(k.startswith("backbone.") for k in sd):
        return sd
    return {k[len("backbone."):]: v for k, v in sd.items()
            if k.startswith("backbone.") and not k.startswith(_HEAD_PREFIXES)}


def is_deploy_state_dict(sd: dict) -> bool:
    """Deploy structure: no block has its last BatchNorm (``stages.i.j.pwconv2.2``)."""
    return not any(".pwconv2.2." in k for k in sd if k.startswith("stages."))


def is_downstream_state_dict(sd: dict) -> bool:
    """The OpenMMLab backbone layout: the four stage norms ``norm0..3``, no classification head."""
    return "norm0.weight" in sd and "head.weight" not in sd


def stage_kernel_sizes(name: str) -> list[int]:
    """The largest kernel of each stage of a published variant with the default kernel sizes (3, 13, 13, 13)."""
    if name not in _FILES:
        raise KeyError(name)
    return [3, 13, 13, 13]
