"""Export a model, dense or factorized, for deployment, and check the file.

Three targets:

``"torchscript"``
    :func:`torch.jit.trace` then :func:`torch.jit.save` (a ``.ts`` file for
    libtorch, C++ and mobile runtimes). Tracing rather than scripting: the
    factorized layers validate their arguments in Python, which TorchScript's
    compiler does not accept, and the execution mode (factorized chain or
    one dense convolution) is fixed at export time anyway. TorchScript is
    deprecated upstream in favour of ``torch.export``; it is kept for the
    runtimes that still load it.
``"export"``
    :func:`torch.export.export` then :func:`torch.export.save` (a ``.pt2``
    file holding an ``ExportedProgram``, the input of AOTInductor,
    ExecuTorch and TensorRT).
``"onnx"``
    :func:`torch.onnx.export` with the ``torch.export``-based exporter (a
    ``.onnx`` file); checked with onnxruntime on the CPU.

Every export has a dynamic batch dimension (the graph is traced at one batch
size and runs at any), and :func:`export_model` reloads the file and
compares it with the eager model at two batch sizes before returning.
Whichever execution a factorized layer is set to is what gets exported:
``tuckerlab.layers.set_execution`` or :func:`tuckerlab.latency.choose_execution`
first, and :func:`tuckerlab.fuse.fuse_for_inference` to fold BatchNorm
(``fuse=True`` here).

Factorized layers have been hard to deploy in other libraries (TorchScript
fails on TensorLy-Torch's layers); the tests export every layer format in
both execution modes and a whole compressed ResNet with all three targets.

Examples
--------
>>> from tuckerlab.export import export_model, load_exported  # doctest: +SKIP
>>> path = export_model(small_model, "resnet20-tk2.onnx", input_size=(3, 32, 32))  # doctest: +SKIP
>>> runtime = load_exported(path)           # an nn.Module running onnxruntime  # doctest: +SKIP
>>> tuckerlab.measure_latency(runtime, (3, 32, 32), batch_size=128)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from tuckerlab.metrics import _EvalNoGrad, _example_input

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "ExportMismatchError",
    "export_model",
    "load_exported",
    "check_export",
    "run_export",
]

#: Export targets, each with its conventional file suffix.
SUFFIXES: dict[str, str] = {"torchscript": ".ts", "export": ".pt2", "onnx": ".onnx"}
FORMATS: tuple[str, ...] = tuple(SUFFIXES)

_INPUT_NAME, _OUTPUT_NAME = "input", "output"


class ExportMismatchError(RuntimeError):
    """The exported file does not compute what the eager model computes."""


def _check_format(format: str | None, path: Path) -> str:
    if format is None:
        by_suffix = {suffix: name for name, suffix in SUFFIXES.items()}
        if path.suffix not in by_suffix:
            raise ValueError(
                f"`format` was not given and the suffix of {str(path)!r} does not name one; "
                f"accepted formats: {FORMATS} (suffixes {tuple(by_suffix)})."
            )
        return by_suffix[path.suffix]
    if format not in SUFFIXES:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    return format


def _batch_dim():
    return torch.export.Dim("batch")


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    format: str | None = None,
    example_input: torch.Tensor | None = None,
    *,
    input_size: Sequence[int] = (3, 32, 32),
    batch_size: int = 2,
    fuse: bool = False,
    check: bool = True,
    atol: float = 1e-5,
) -> Path:
    """Write ``model`` as a TorchScript, ``torch.export`` or ONNX file.

    Parameters
    ----------
    model : torch.nn.Module
        Dense or factorized; exported in eval mode (its modes are restored
        afterwards) with each factorized layer's current execution.
    path : path-like
        Destination; its folder is created. Written atomically.
    format : {"torchscript", "export", "onnx"}, optional
        Default: from the suffix of ``path`` (``.ts``, ``.pt2``, ``.onnx``).
    example_input : torch.Tensor, optional
        The input the graph is traced with; its batch dimension is made
        dynamic. Default: random of shape ``(batch_size, *input_size)`` on
        the model's device, in its dtype.
    input_size : sequence of int, default (3, 32, 32)
        One input without the batch dimension, when ``example_input`` is
        not given.
    batch_size : int, default 2
        Batch of the default example input. Batch 1 would let the exporters
        specialise the graph to one image.
    fuse : bool, default False
        Export :func:`tuckerlab.fuse.fuse_for_inference` of (a copy of) the
        model: BatchNorm folded into the layer before it, consecutive 1x1
        stages merged. Exact up to rounding; ``check`` verifies it.
    check : bool, default True
        Reload the file and compare its outputs with the eager model's
        (:func:`check_export`) at the example batch and at batch 1.
    atol : float, default 1e-5
        Largest absolute difference ``check`` accepts.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    ValueError
        Unknown format, or no format given and an unknown suffix.
    ImportError
        ``format="onnx"`` without the ``onnx``/``onnxscript`` packages
        (``pip install "tuckerlab[export]"``).
    ExportMismatchError
        ``check`` found outputs further than ``atol`` from the eager model.
    """
    path = Path(path)
    format = _check_format(format, path)
    if example_input is None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        example_input = _example_input(model, tuple(int(d) for d in input_size), batch_size)
    reference = model
    if fuse:
        from tuckerlab.fuse import fuse_for_inference

        model = fuse_for_inference(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write under a temporary name in the same folder, then rename: a failed
    # export leaves no half-written file under the final name.
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    try:
        with _EvalNoGrad(model):
            _WRITERS[format](model, example_input, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if check:
        inputs = [example_input, example_input[:1]]
        diff = check_export(path, reference, inputs, format=format)
        if not diff <= atol:
            raise ExportMismatchError(
                f"the {format} export {str(path)!r} differs from the eager model by up to {diff:.3g} "
                f"(accepted: {atol:g})"
            )
    return path


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        # Factorized layers read ranks from their parameters' shapes: constants
        # of the trace, which the tracer warns about by default. The batch size
        # is not read, so the trace runs at any batch (checked by export_model).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, x, check_trace=False)
    torch.jit.save(traced, str(path))


def _write_export(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    program = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(path))


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as err:
            raise ImportError(
                f"ONNX export needs the {package!r} package: pip install \"tuckerlab[export]\""
            ) from err
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: _batch_dim()},),
        input_names=[_INPUT_NAME],
        output_names=[_OUTPUT_NAME],
        external_data=False,
        verbose=False,
    )


_WRITERS = {"torchscript": _write_torchscript, "export": _write_export, "onnx": _write_onnx}


class OnnxRuntimeModule(nn.Module):
    """An ONNX file run by onnxruntime, called like a module: tensor in, tensor out.

    Parameters
    ----------
    path : path-like
        A file written by :func:`export_model` (one input, one output).
    providers : sequence of str, default ("CPUExecutionProvider",)
        onnxruntime execution providers, in order of preference.
    threads : int, optional
        onnxruntime's intra-op threads; default ``torch.get_num_threads()``,
        so that latencies compare with PyTorch's at the same thread count.

    Notes
    -----
    Inputs are copied to the CPU as float32 numpy arrays and the output is
    returned as a CPU tensor; the module has no parameters, so
    :func:`tuckerlab.metrics.measure_latency` times it with a float32 CPU input.
    """

    def __init__(self, path, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime
        except ImportError as err:
            raise ImportError('running ONNX files needs onnxruntime: pip install "tuckerlab[export]"') from err
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(threads if threads is not None else torch.get_num_threads())
        self.path = str(path)
        self.session = onnxruntime.InferenceSession(self.path, options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: x.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(out)

    def extra_repr(self) -> str:
        return f"{self.path!r}, providers={self.session.get_providers()}"


def load_exported(path: str | os.PathLike, format: str | None = None, map_location="cpu") -> nn.Module:
    """Load a file written by :func:`export_model` as a callable module.

    Parameters
    ----------
    path : path-like
    format : {"torchscript", "export", "onnx"}, optional
        Default: from the suffix.
    map_location : str or torch.device, default "cpu"
        Device of a TorchScript model's weights (``torch.export`` programs
        load where they were saved; ONNX runs in onnxruntime).

    Returns
    -------
    torch.nn.Module
        ``torch.jit.ScriptModule``, the ``ExportedProgram``'s ``module()``,
        or an :class:`OnnxRuntimeModule`; each maps an input batch to the
        output tensor, so :func:`tuckerlab.metrics.measure_latency` times it.
    """
    path = Path(path)
    format = _check_format(format, path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model {str(path)!r} does not exist")
    if format == "torchscript":
        return torch.jit.load(str(path), map_location=map_location)
    if format == "export":
        return torch.export.load(str(path)).module()
    return OnnxRuntimeModule(path)


def check_export(
    path: str | os.PathLike,
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    format: str | None = None,
) -> float:
    """Largest absolute difference between an exported file and the eager model.

    Parameters
    ----------
    path : path-like
        The exported file.
    model : torch.nn.Module
        The model it was exported from; run in eval mode under ``no_grad``.
    inputs : tensor or sequence of tensors
        Batches to compare on (e.g. two batch sizes, to check the dynamic
        batch dimension).
    format : str, optional
        Default: from the suffix.

    Returns
    -------
    float
        ``max |exported(x) - model(x)|`` over all inputs (``inf`` if an
        output has another shape).
    """
    runtime = load_exported(path, format)
    if isinstance(inputs, torch.Tensor):
        inputs = [inputs]
    worst = 0.0
    with _EvalNoGrad(model), torch.no_grad():
        for x in inputs:
            expected = model(x)
            got = runtime(x).to(expected.device)
            if got.shape != expected.shape:
                return float("inf")
            worst = max(worst, float((got - expected).abs().max()))
    return worst


def run_export(
    model_file: str | os.PathLike,
    out: str | os.PathLike | None = None,
    format: str = "onnx",
    *,
    input_size: Sequence[int] | None = None,
    batch_size: int = 2,
    fuse: bool = False,
    check: bool = True,
) -> Path:
    """Body of ``tuckerlab export MODEL_FILE --format FORMAT``: a model file to a deployable file.

    Parameters
    ----------
    model_file : path-like
        A file written by :func:`tuckerlab.serialization.save_model` (dense
        or compressed).
    out : path-like, optional
        Destination; default ``model_file`` with the format's suffix
        (``model.pt`` becomes ``model.onnx``).
    format : {"torchscript", "export", "onnx"}, default "onnx"
    input_size : sequence of int, optional
        One input without batch; default ``(in_channels, 32, 32)`` with the
        model file's ``in_channels``.
    batch_size, fuse, check
        As in :func:`export_model`.

    Returns
    -------
    pathlib.Path
        The file written (checked against the eager model unless
        ``check=False``).
    """
    from tuckerlab.serialization import load_model

    if format not in SUFFIXES:
        raise ValueError(f"`format` must be one of {FORMATS}, got {format!r}.")
    model, info = load_model(model_file)
    if input_size is None:
        input_size = (int(info["in_channels"]), 32, 32)
    out = Path(out) if out is not None else Path(model_file).with_suffix(SUFFIXES[format])
    return export_model(model, out, format, input_size=input_size, batch_size=batch_size, fuse=fuse, check=check)
