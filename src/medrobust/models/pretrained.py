"""Load a user's pretrained weights into a registry network (never downloads, never unpickles).

Accepted files:

- a medrobust checkpoint (``model.json`` or its folder; e.g. from ``medrobust
  pretrain-natural``) or a bare ``.safetensors`` file;
- a PyTorch state dict (``.pt``/``.pth``/``.bin``) read with ``torch.load(weights_only=True)``,
  possibly nested under "state_dict" or "model" and prefixed "module." (DDP), with
  torchvision's key names for resnet18/34/50 and densenet121.

torchvision -> MONAI key mapping (written here because MONAI only maps densenet keys inside
its downloader, and only the old "norm.1" spelling):
``denselayerN.norm1`` -> ``denselayerN.layers.norm1`` (likewise relu/conv, old and new
spellings), ``classifier`` -> ``class_layers.out``. ResNet names are the same in both;
MONAI's downsample convolutions have a bias that torchvision's lack, so those biases are
set to zero (the same function) and listed.

The classifier head (``fc`` / ``class_layers.out`` / ``_fc``) is loaded only when its shape
fits; otherwise it keeps its fresh initialisation and is listed. A first convolution
pretrained on RGB loaded into a one-channel network is summed over the colour channels
(equivalent to feeding the grey image as R = G = B). Anything else that does not fit
raises :class:`~medrobust.models.checkpoint.CheckpointError` listing the keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.networks.nets import DenseNet, EfficientNet, ResNet
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from medrobust.models.checkpoint import CheckpointError, read_checkpoint_info

_DENSE_LAYER = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(.+)$")
_SHOWN = 10


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did; each list holds state-dict keys of the target model."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    head_skipped: list[str] = field(default_factory=list)  # classifier keys left at their initialisation
    zero_filled: list[str] = field(default_factory=list)  # biases the source has not got (set to 0)
    channel_summed: list[str] = field(default_factory=list)  # RGB first conv summed onto one channel
    missing: list[str] = field(default_factory=list)  # not in the file (strict=False only)
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # "key: file (..) vs model (..)" (strict=False only)

    def summary(self) -> str:
        """One line per kind of change made while loading (what was loaded, skipped, filled, summed)."""
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for label in ("head_skipped", "zero_filled", "channel_summed", "missing", "unexpected", "mismatched"):
            items = getattr(self, label)
            if items:
                more = f" ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
                parts.append(f"{label.replace('_', ' ')} ({len(items)}): {', '.join(items[:_SHOWN])}{more}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint folder/``model.json``, a ``.safetensors`` file or a weights-only state dict."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".json":
        path = read_checkpoint_info(path).weights_path
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refusals and corrupt archives come as several error types
        raise CheckpointError(f"{path}: not a weights-only PyTorch state dict (nothing is unpickled; "
                              f"save tensors only, or use safetensors): {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def torchvision_to_monai(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision densenet keys to MONAI's; other keys pass unchanged."""
    out = {}
    for key, value in state.items():
        match = _DENSE_LAYER.match(key)
        if match and ".layers." not in key:
            key = f"{match[1]}.layers.{match[2]}{match[3]}.{match[4]}"
        elif key.startswith("classifier."):
            key = "class_layers.out." + key.removeprefix("classifier.")
        out[key] = value
    return out


def head_prefix(model: nn.Module) -> str | None:
    """State-dict prefix of the classifier head of a MONAI classifier, None for other nets."""
    if isinstance(model, ResNet):
        return "fc."
    if isinstance(model, DenseNet):
        return "class_layers.out."
    if isinstance(model, EfficientNet):
        return "_fc."
    return None


def load_pretrained(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Copy pretrained weights into ``model`` (in place) and report what happened.

    Args:
        model: a registry network (MONAI ResNet, DenseNet, EfficientNet, ...).
        path: see the module docstring for accepted files.
        strict: raise on missing, unexpected or mis-shaped keys outside the head; with
            False they are listed in the report and left as they are.

    Raises:
        CheckpointError: unreadable file, nothing in common with the model, or (strict)
            keys that do not fit, listed with their shapes.
    """
    path = Path(path)
    source = torchvision_to_monai(read_state_dict(path))
    own = model.state_dict()
    head = head_prefix(model)
    report = LoadReport(path=path)
    new_state = {}
    for key, target in own.items():
        value = source.get(key)
        is_head = head is not None and key.startswith(head)
        if value is None:
            if key.endswith("downsample.0.bias") and key.removesuffix("bias") + "weight" in source:
                new_state[key] = torch.zeros_like(target)
                report.zero_filled.append(key)
            elif is_head:
                report.head_skipped.append(key)
            else:
                report.missing.append(key)
            continue
        if value.shape != target.shape:
            if value.ndim == target.ndim >= 3 and value.shape[1] == 3 and target.shape[1] == 1 \
                    and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
                new_state[key] = value.sum(1, keepdim=True).to(target.dtype)
                report.channel_summed.append(key)
            elif is_head:
                report.head_skipped.append(key)
            else:
                report.mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        new_state[key] = value.to(target.dtype)
        report.loaded.append(key)
    report.unexpected = sorted(k for k in source if k not in own and not (head and k.startswith(head)))
    if not report.loaded:
        raise CheckpointError(f"{path}: no tensor fits {type(model).__name__}; is it the right architecture? "
                              f"({report.summary()})")
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(f"{path}: pretrained weights do not fit {type(model).__name__} "
                              f"(pass strict=False to load what fits): {report.summary()}")
    model.load_state_dict(new_state, strict=False)
    return report
