"""What is differentiated and how the input gradient becomes a map: the ERF variants of the literature.

An ERF map of an image ``x`` with target feature map ``y = f(x)`` (B, C, h, w), centre ``(h//2, w//2)``, is
``map = R(g)``, ``g = d s / d x`` (B, 3, H, W), where the **objective** ``s`` says what is differentiated and the
**reduction** ``R`` how the three colour channels of ``g`` become one number per pixel:

objectives (``objective=``, ``--objective``)
    ``paper``: ``s = sum_c ReLU(y[c, h//2, w//2])``, so ``d s / d y`` is ``1[y > 0]`` at the centre and 0 elsewhere
    (ReLU'(0) = 0, as PyTorch). RepLKNet, Ding et al. CVPR 2022, section 5.1; the official ``erf/visualize_erf.py``,
    ``get_input_grad``. The default.
    ``unit``: ``s = sum_c y[c, h//2, w//2]``: the output gradient is one at the centre position in every channel
    and zero elsewhere, no ReLU of the activations. Luo et al., "Understanding the Effective Receptive Field in
    Deep Convolutional Neural Networks", NeurIPS 2016, section 2 (``dl/dy_{0,0} = 1``, 0 elsewhere), applied to
    every channel of the target.

reductions (``reduction=``, ``--reduce``)
    ``relu``: ``sum_k ReLU(g_k)`` over the colour channels ``k``; the official ``get_input_grad``. The default.
    ``abs``: ``sum_k |g_k|``: negative contributions count as much as positive ones (asked in
    DingXiaoH/RepLKNet-pytorch issue #62).
    ``l2``: ``sqrt(sum_k g_k^2)``: the Euclidean norm over the colour channels (the channel-norm reduction of
    point-cloud and saliency work).

The functions here are pure: the per-batch math (:mod:`erftools.erf.compute`) calls :func:`output_seed` and
:func:`reduce_gradient`; argparse ``choices=`` and the study parser import :data:`OBJECTIVES` / :data:`REDUCTIONS`.
torch is imported only inside the functions (the dashboard imports the labels without it).
"""
from __future__ import annotations

from .._io import ErftoolsError

#: what is differentiated: the first is the default (the paper's)
OBJECTIVES = ("paper", "unit")
#: how the input gradient's colour channels become one value per pixel: the first is the default (the paper's)
REDUCTIONS = ("relu", "abs", "l2")
DEFAULT_OBJECTIVE, DEFAULT_REDUCTION = OBJECTIVES[0], REDUCTIONS[0]

#: one line per choice, for --help and the docs
OBJECTIVE_HELP = {"paper": "sum_c ReLU(y_c at the centre) (RepLKNet, the official script; default)",
                  "unit": "sum_c y_c at the centre: a unit output gradient in every channel (Luo et al. 2016)"}
REDUCTION_HELP = {"relu": "sum over RGB of ReLU(g) (RepLKNet, the official script; default)",
                  "abs": "sum over RGB of |g|", "l2": "sqrt(sum over RGB of g^2)"}

__all__ = ["OBJECTIVES", "REDUCTIONS", "DEFAULT_OBJECTIVE", "DEFAULT_REDUCTION", "check_objective",
           "check_reduction", "output_seed", "reduce_gradient", "variant_text", "label_with_variant"]


def _check(value: str, choices: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``choices``; otherwise an error naming them (the first is the paper's default)."""
    if value not in choices:
        raise ErftoolsError(f"unknown {what} {value!r}: use one of {', '.join(map(repr, choices))} "
                            f"({choices[0]!r} is RepLKNet's and the default)")
    return value


def check_objective(objective: str) -> str:
    """``objective`` if it is one of :data:`OBJECTIVES`; otherwise an error naming the choices."""
    return _check(objective, OBJECTIVES, "ERF objective")


def check_reduction(reduction: str) -> str:
    """``reduction`` if it is one of :data:`REDUCTIONS`; otherwise an error naming the choices."""
    return _check(reduction, REDUCTIONS, "gradient reduction")


def output_seed(y, objective: str = DEFAULT_OBJECTIVE):
    """``d s / d y`` of the objective for a target ``y`` (B, C, h, w), in ``y``'s own memory layout (a
    channels-last network stays channels-last on the way back): zero except at the centre, where it is
    ``1[y > 0]`` (``paper``) or 1 (``unit``)."""
    import torch

    check_objective(objective)
    h, w = y.shape[-2:]
    seed = torch.zeros_like(y)
    seed[:, :, h // 2, w // 2] = (y[:, :, h // 2, w // 2].detach() > 0).to(y.dtype) if objective == "paper" else 1
    return seed


def reduce_gradient(grad, reduction: str = DEFAULT_REDUCTION):
    """The per-image map (B, H, W) of an input gradient ``grad`` (B, 3, H, W), reduced over the colour channels."""
    import torch

    check_reduction(reduction)
    if reduction == "relu":
        return torch.relu(grad).sum(1)
    if reduction == "abs":
        return grad.abs().sum(1)
    return torch.linalg.vector_norm(grad, dim=1)


def variant_text(objective: str | None = None, reduction: str | None = None) -> str:
    """A short label of a non-default variant (``"unit objective, abs reduction"``); ``""`` for the paper's
    procedure (also for records made before these options existed, which have neither key)."""
    parts = []
    if objective not in (None, DEFAULT_OBJECTIVE):
        parts.append(f"{objective} objective")
    if reduction not in (None, DEFAULT_REDUCTION):
        parts.append(f"{reduction} reduction")
    return ", ".join(parts)


def label_with_variant(label: str, objective: str | None = None, reduction: str | None = None) -> str:
    """``label`` with the variant appended in parentheses (``"ResNet-18 (unit objective)"``) unless it is the
    paper's procedure or the label already names it: what figures and tables show for a run."""
    text = variant_text(objective, reduction)
    if not text or text in label:
        return label
    return f"{label} ({text})"
