"""medrobust.models: registry of MONAI nets, safetensors checkpoints, SlidingWindow, Ensemble.

Public API::

    build_model(name, spatial_dims=3, in_channels=1, out_channels=2, **kwargs) -> nn.Module
    register_model(name), model_names(), model_spec(model)
    save_checkpoint(out_dir, model, *, classes, ...) -> Path; load_checkpoint(json_path)
    SlidingWindow(model, roi_size, overlap=0.25, sw_batch_size=1, mode="gaussian")
    Ensemble(members, mode="mean_logits" | "mean_probs")
"""
from medrobust.models import (
                                         assimilation,  # noqa: E402,F401  (registers the "assimilation" composite)
                                         cooperative,  # noqa: F401  (registers the "cooperative" composite)
)
from medrobust.models.checkpoint import (
                                         CheckpointError,
                                         CheckpointInfo,
                                         load_checkpoint,
                                         load_state_into,
                                         read_checkpoint_info,
                                         save_checkpoint,
)
from medrobust.models.ensemble import Ensemble
from medrobust.models.registry import build_model, model_names, model_spec, register_model
from medrobust.models.wrappers import SlidingWindow

__all__ = ["build_model", "model_names", "model_spec", "register_model", "Ensemble", "SlidingWindow",
           "CheckpointError", "CheckpointInfo", "load_checkpoint", "load_state_into", "read_checkpoint_info",
           "save_checkpoint"]
