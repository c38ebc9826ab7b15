"""Whether a torch device name exists on this machine (a library check; the CLI's ``--device`` uses it too)."""
from __future__ import annotations

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
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if torch.device(resolved).type != "cuda":
        raise ValueError(f"{what}: fp16 needs a CUDA device, and the device is {device}"
                         f"{' (no CUDA here)' if device == 'auto' else ''}; use bf16 or none on the CPU")
