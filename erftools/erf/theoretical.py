"""The theoretical receptive field of a target: the input square it can depend on, from kernel sizes, strides and
dilations along the network.

It is traced, not guessed from module order: one small forward pass (no gradients) runs under a PyTorch function
mode that follows every tensor from the input to the target with its receptive field per spatial axis (size ``r``
and jump ``j``, the distance in input pixels between neighbouring positions). A convolution or pooling with kernel
``k``, dilation ``d`` and stride ``s`` gives ``r + (k - 1) * d * j`` and ``j * s``; an operation combining several
tensors (a residual sum, a concatenation) takes the largest; any other operation that keeps the spatial size keeps
the field (activations, norms over channels, linear layers over channels, permutations of the axes are followed,
padding). Parallel branches are therefore handled as the dataflow goes (RepLKNet's small-kernel branch beside the
large kernel, a ResNet's strided shortcut beside its main path). An operation that changes the spatial size in any
other way (a global or adaptive pooling, a flatten to tokens, interpolation) makes the target depend on the whole
input: the answer is then None with the reason, as it is for networks with attention (transformers), whose
receptive field is not set by kernels. One exception, for UniRepLKNet only (every block has a squeeze-and-excitation
and a GRN, which would make every field the whole input and hide what its kernels and dilated branches span): a
channel gate, a spatial tensor multiplied by a tensor of spatial size 1 computed from global statistics, keeps the
field of the kernels, and the result says how many gates it did not count (its ``reason`` is then a note beside a
size). Padding is ignored, so the size is that of the unclipped field.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from .adapters import _is_unireplknet, feature_map, model_name

__all__ = ["TheoreticalRF", "theoretical_rf", "theoretical_rfs"]


@dataclass(frozen=True)
class TheoreticalRF:
    """``side`` (rows, cols) in input pixels, unclipped; ``stride`` (rows, cols): the target's step in input
    pixels; both None with ``reason`` when the target depends on the whole input or cannot be traced."""
    side: tuple[int, int] | None
    stride: tuple[int, int] | None
    target: str
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"side": None if self.side is None else list(self.side),
                "stride": None if self.stride is None else list(self.stride),
                "target": self.target, "reason": self.reason}


@dataclass(frozen=True)
class _Field:
    r: tuple[int, int]  # receptive field size (rows, cols)
    j: tuple[int, int]  # jump (rows, cols)
    axes: tuple[int, int]  # which tensor dims are rows and cols
    size: tuple[int, int]  # the tensor's spatial size at those dims
    ndim: int


@dataclass(frozen=True)
class _Global:
    reason: str


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


class _Tracer(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.fields: dict[int, object] = {}
        self._keep: list = []  # tensors with a field stay alive, so their ids are not reused
        self.depth = 0  # > 0 inside a convolution / pooling module (handled as a whole by its hooks)
        self.gates = 0  # channel gates (squeeze-and-excitation) multiplied onto a traced tensor
        self.skip_gates = False  # count them as per-channel scales (UniRepLKNet), not as global operations

    def set(self, t: torch.Tensor, f) -> None:
        self.fields[id(t)] = f
        self._keep.append(t)

    def get(self, t):
        return self.fields.get(id(t)) if isinstance(t, torch.Tensor) else None

    def source(self, t: torch.Tensor) -> None:
        self.set(t, _Field((1, 1), (1, 1), (t.ndim - 2, t.ndim - 1), tuple(t.shape[-2:]), t.ndim))

    def window(self, f, out: torch.Tensor, k, s, d, what: str):
        if isinstance(f, _Global):
            return f
        if f.axes != (f.ndim - 2, f.ndim - 1):
            return _Global(f"{what} applied to a tensor whose last two dims are not its spatial axes")
        k, s, d = _pair(k), _pair(s), _pair(d)
        r = tuple(f.r[i] + (k[i] - 1) * d[i] * f.j[i] for i in range(2))
        j = tuple(f.j[i] * s[i] for i in range(2))
        return _Field(r, j, f.axes, tuple(out.shape[-2:]), out.ndim)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        ins = [f for f in map(self.get, _tensors((args, kwargs))) if f is not None]
        outs = list(_tensors(out))
        if not ins or not outs:
            return out
        name = getattr(func, "__name__", str(func))
        if name == "conv2d" and len(args) >= 2:
            stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
            dil = args[5] if len(args) > 5 else kwargs.get("dilation", 1)
            self.set(outs[0], self.window(self.get(args[0]), outs[0], tuple(args[1].shape[-2:]), stride, dil,
                                          "a convolution"))
            return out
        if name in ("max_pool2d", "avg_pool2d", "_max_pool2d", "max_pool2d_with_indices"):
            k = args[1] if len(args) > 1 else kwargs.get("kernel_size")
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            d = kwargs.get("dilation", args[4] if name != "avg_pool2d" and len(args) > 4 else 1)
            f = self.window(self.get(args[0]), outs[0], k, s or k, d, "a pooling")
            for t in outs:
                self.set(t, f)
            return out
        glob = [f for f in ins if isinstance(f, _Global)]
        local = [f for f in ins if isinstance(f, _Field)]
        if self.skip_gates and glob and local and name in ("mul", "__mul__", "mul_") and _is_channel_gate(args, self):
            self.gates += 1  # x * gate(B, C, 1, 1): a per-channel scale, the field is the kernels' (see the docstring)
            glob, ins = [], local
        if glob:
            for t in outs:
                self.set(t, glob[0])
            return out
        base = max(ins, key=lambda f: f.r[0] * f.r[1])
        r = (max(f.r[0] for f in ins), max(f.r[1] for f in ins))
        j = (max(f.j[0] for f in ins), max(f.j[1] for f in ins))
        for t in outs:
            axes = base.axes
            if name == "permute":
                dims = args[1:] if len(args) > 2 or not isinstance(args[1], (tuple, list)) else args[1]
                dims = [int(d) % base.ndim for d in dims]
                axes = (dims.index(base.axes[0]), dims.index(base.axes[1]))
            elif name == "pad":
                self.set(t, _Field(r, j, axes, tuple(t.shape[a] for a in axes), t.ndim))
                continue
            if t.ndim == base.ndim and tuple(t.shape[a] for a in axes) == base.size:
                self.set(t, _Field(r, j, axes, base.size, t.ndim))
            else:
                self.set(t, _Global(f"{name} changes the spatial layout (output shape {tuple(t.shape)}): the "
                                    "target depends on the whole input"))
        return out


_WINDOW_MODULES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
GATE_NOTE = ("the kernels' field: {n} channel gates computed from global statistics (squeeze-and-excitation, GRN) "
             "are per-channel scales and are not counted (through them every output depends on the whole input)")


def _is_channel_gate(args, tracer: _Tracer) -> bool:
    """A product of a traced spatial tensor and a globally computed tensor of size 1 along both spatial axes
    (squeeze-and-excitation's (B, C, 1, 1) gate; GRN's (B, 1, 1, C) one in NHWC)."""
    ts = [t for t in args if isinstance(t, torch.Tensor)]
    if len(ts) != 2:
        return False
    fields = [(t, tracer.get(t)) for t in ts]
    local = [(t, f) for t, f in fields if isinstance(f, _Field)]
    glob = [t for t, f in fields if isinstance(f, _Global)]
    if len(local) != 1 or len(glob) != 1:
        return False
    (t, f), g = local[0], glob[0]
    return g.ndim == t.ndim and all(g.shape[a] == 1 for a in f.axes)


def _has_attention(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower():
            return f"{type(m).__name__} ({name})"
    return None


def theoretical_rf(model: nn.Module, layer: str | None = None, *, input_size: tuple[int, int] | int = 64,
                   probe_size: int | None = None) -> TheoreticalRF:
    """The theoretical receptive field of the centre of ``layer``'s output (a module name; default: the family's
    final feature map, as :func:`erftools.erf.adapters.feature_map`) in ``model``.

    Traced with one forward pass without gradients on a small zero input (``probe_size``, default 64 px, doubled
    while some traced tensor is only 1 pixel wide, where a global operation could not be told from a local one;
    the size of the field does not depend on the input size); ``input_size`` is a fallback probe when the small
    one fails. Returns side None with a reason for transformers (attention) and for targets behind an operation
    that mixes the whole input.
    """
    return theoretical_rfs(model, [layer], input_size=input_size, probe_size=probe_size)[layer]


def theoretical_rfs(model: nn.Module, layers, *, input_size: tuple[int, int] | int = 64,
                    probe_size: int | None = None) -> dict:
    """:func:`theoretical_rf` of several layers from one traced forward pass: ``{layer: TheoreticalRF}`` (the
    name ``None`` stands for the final feature map and is traced separately)."""
    layers = list(layers)
    att = _has_attention(model)
    if att:
        return {layer: TheoreticalRF(None, None, layer or "final feature map",
                                     f"{model_name(model)} has attention ({att}): its receptive field is not set by "
                                     "kernel sizes and strides (a transformer)") for layer in layers}
    out = {}
    groups = [[n for n in layers if n is not None]] + ([[None]] if None in layers else [])
    fallback = input_size if isinstance(input_size, int) else max(input_size)
    for group in groups:
        if not group:
            continue
        size, result = int(probe_size or 64), None
        while result is None:
            try:
                result, smallest = _trace(model, group, size)
            except Exception as exc:  # the probe was too small for the network: try the real input size
                if size >= max(fallback, 64):
                    result = {n: TheoreticalRF(None, None, n or "final feature map",
                                               f"tracing the model failed: {exc}") for n in group}
                    break
                size = max(fallback, 64)
                continue
            if smallest <= 1 and size < 1024:  # retry larger: a 1-pixel map hides global operations
                result, size = None, size * 2
        out.update(result)
    return {n: out[n] for n in layers}


def _trace(model: nn.Module, layers: list, size: int) -> tuple[dict, int]:
    """Trace ``layers`` (module names, or ``[None]`` for the final feature map) with a ``size`` px probe; returns
    the fields and the smallest spatial size of any traced tensor."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    tracer = _Tracer()
    tracer.skip_gates = _is_unireplknet(model)
    handles, captured = [], {}

    def pre(module, args):
        tracer.depth += 1
        module._erftools_rf_in = tracer.get(args[0]) if args else None

    def post(module, args, output):
        tracer.depth -= 1
        f = module._erftools_rf_in
        del module._erftools_rf_in
        if f is None or tracer.depth:
            return
        what = "a convolution" if isinstance(module, nn.Conv2d) else "a pooling"
        f = tracer.window(f, output, module.kernel_size, module.stride or module.kernel_size,  # a conv's is set
                          getattr(module, "dilation", 1), what)
        for t in _tensors(output):
            tracer.set(t, f)

    def keep(name):
        return lambda mod, a, o: captured.setdefault(name, o)

    modules = dict(model.named_modules())
    names = [n for n in layers if n is not None]
    missing = [n for n in names if n not in modules]
    if missing:
        from .layers import check_layers

        check_layers(model, missing)
    was_training = model.training
    try:
        for m in model.modules():
            if isinstance(m, _WINDOW_MODULES):
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
        for n in names:
            handles.append(modules[n].register_forward_hook(keep(n)))
        model.eval()
        # channels-last: the same logical NCHW shapes, and PyTorch's fast CPU path for (large) depthwise kernels
        x = torch.zeros(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), tracer:
            tracer.source(x)
            if names:
                model(x)
            else:
                captured[None] = feature_map(model)(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    smallest = min((min(f.size) for f in tracer.fields.values() if isinstance(f, _Field)), default=size)
    out = {}
    for n in layers:
        target = n or "final feature map"
        f = tracer.get(captured.get(n))
        if f is None:
            out[n] = TheoreticalRF(None, None, target, "the target is not computed from the input (nothing to trace)")
        elif isinstance(f, _Global):
            out[n] = TheoreticalRF(None, None, target, f.reason)
        else:
            out[n] = TheoreticalRF(f.r, f.j, target, GATE_NOTE.format(n=tracer.gates) if tracer.gates else None)
    return out, smallest
