"""Device names: whether one exists on this machine, and what one means.

:func:`check_device` is a library check the CLI's ``--device`` uses too; :func:`resolve_device`
is the one rule that turns a name into a ``torch.device``.
"""
from __future__ import annotations

import os

import torch


def check_device(name: str, what: str) -> None:
    """Refuse a torch device this machine does not have (``auto`` is always fine).

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...
        what: the option or key named in the error (``--device``, ``device``).

    Raises:
        ValueError: an unknown device name, or CUDA/MPS that is not available here.

    Example:
        >>> check_device("cpu", "--device")
        >>> check_device("gpu", "device")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: device: 'gpu' is not a device; allowed: auto, cpu, cuda, cuda:N, mps
    """
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{what}: {name!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}: {name!r} asked for, but this machine has no usable CUDA device; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{what}: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what}: {name!r} asked for, but MPS is not available on this machine; use cpu or auto")


def resolve_device(name: str) -> torch.device:
    """The device a name means: ``auto`` is CUDA when present, else the CPU.

    Under ``torchrun`` (``LOCAL_RANK`` set) a bare ``cuda`` (or ``auto`` on a CUDA machine)
    means this process's GPU, ``cuda:LOCAL_RANK``, so the ranks do not share GPU 0; an
    indexed CUDA device is made the current one (NCCL collectives run on it). Training, the
    evaluation grid and every command that runs a model resolve names here.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: a name that is no device (use :func:`check_device` first to also refuse
            a device this machine lacks).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("auto").type in ("cpu", "cuda")
        True
    """
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except RuntimeError:
        raise ValueError(f"{name!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def process_group_backend(device: torch.device) -> str:
    """The torch.distributed backend of ranks that compute on ``device``: NCCL on CUDA, gloo otherwise.

    Args:
        device: this rank's device (:func:`resolve_device`).

    Returns:
        ``"nccl"`` or ``"gloo"``.

    Example:
        >>> process_group_backend(torch.device("cuda", 1)), process_group_backend(torch.device("cpu"))
        ('nccl', 'gloo')
    """
    return "nccl" if device.type == "cuda" else "gloo"


def check_amp(amp: str, device: str, what: str) -> None:
    """Refuse fp16 mixed precision on a device that is not CUDA (``auto`` resolves to CUDA if present).

    Args:
        amp: ``none``, ``bf16`` or ``fp16``.
        device: the device name the run uses.
        what: the option or key named in the error (``--amp``).

    Raises:
        ValueError: fp16 without a CUDA device.

    Example:
        >>> check_amp("bf16", "cpu", "--amp")
        >>> check_amp("fp16", "cpu", "--amp")
        Traceback (most recent call last):
        ...
        ValueError: --amp: fp16 needs a CUDA device, and the device is cpu; use bf16 or none on the CPU
    """
    if amp != "fp16":
        return
    if resolve_device(device).type != "cuda":
        raise ValueError(f"{what}: fp16 needs a CUDA device, and the device is {device}"
                         f"{' (no CUDA here)' if device == 'auto' else ''}; use bf16 or none on the CPU")
