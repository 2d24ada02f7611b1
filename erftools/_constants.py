"""The choices shared by the engines, the CLI (argparse ``choices=``) and the study files, each with one owner here.

Standard library only, so that ``erftools --help`` imports no torch. The modules that use them re-export them under
their old names (``erftools.erf.precision.PRECISIONS``, ``erftools.shapebias.decisions.PRECISIONS``,
``erftools.ops.BACKENDS``, ``erftools.images.SAMPLERS``).
"""
from __future__ import annotations

#: the ERF's arithmetic: ``fp32`` (the paper's, the default), ``tf32`` (CUDA tensor cores' 10-bit-mantissa inputs for
#: convolutions and matrix products), ``bf16`` (autocast of the forward pass); errors in erftools.erf.precision
ERF_PRECISIONS = ("fp32", "tf32", "bf16")
#: the shape bias's arithmetic: ``fp32`` (the model-vs-human protocol's) or ``bf16`` (autocast, checked against fp32)
SHAPE_BIAS_PRECISIONS = ("fp32", "bf16")
#: the large-kernel depthwise convolution backends of erftools.ops (``auto`` picks one per call)
CONV_BACKENDS = ("native", "fft", "triton")
CONV_BACKEND_CHOICES = ("auto", *CONV_BACKENDS)
#: the devices a run is asked for by name (``cuda:N`` too where a string is accepted)
DEVICES = ("auto", "cpu", "cuda")
#: how the images of an ERF run are drawn from a folder (erftools.images.select_images)
SAMPLERS = ("random", "sequential", "stratified")

__all__ = ["ERF_PRECISIONS", "SHAPE_BIAS_PRECISIONS", "CONV_BACKENDS", "CONV_BACKEND_CHOICES", "DEVICES", "SAMPLERS"]
