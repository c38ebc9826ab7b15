"""``SlidingWindow``: MONAI sliding-window inference as a differentiable module.

It also gives the exact whole-volume input gradient at the memory of about one window.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.utils import fall_back_tuple
from torch import nn

__all__ = ["SlidingWindow", "scan_interval"]
BLEND_MODES = ("gaussian", "constant")


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """The step between neighbouring windows per axis, as MONAI's sliding-window inference takes it.

    An axis the window covers whole takes one step of the window's size; otherwise the step is
    ``int(roi * (1 - overlap))``, at least 1.

    Args:
        image_size: the (padded) spatial size, one int per axis.
        roi_size: the window size, one int per axis.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).

    Returns:
        The step per axis.

    Example:
        >>> scan_interval((40, 16), (16, 16), 0.25)
        (12, 16)
    """
    return tuple(int(r) if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(image_size, roi_size))


class SlidingWindow(nn.Module):
    """Run ``model`` over overlapping ROI windows and blend the logits (MONAI semantics).

    Args:
        model: maps windows ``(n, C, *roi_size)`` to logits ``(n, K, *roi_size)``.
        roi_size: window size, one int per spatial axis (2 or 3 of them).
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        sw_batch_size: windows per model call (memory grows with it).
        mode: "gaussian" (down-weights window borders) or "constant" blending.
        sigma_scale: Gaussian sigma as a fraction of the ROI side.

    ``forward(x)`` maps ``(B, C, *spatial)`` to ``(B, K, *spatial)`` and equals
    ``monai.inferers.sliding_window_inference`` (it calls it); it is differentiable.
    Inputs smaller than the ROI are zero-padded and the output cropped, as MONAI does.
    Attacks given a SlidingWindow use :meth:`loss_and_input_grad` for the whole-volume
    gradient at one window's memory.

    Raises:
        ValueError: ``roi_size`` not 2 or 3 positive ints, ``overlap`` outside [0, 1),
            ``sw_batch_size`` < 1 or an unknown ``mode``.

    Shape:
        - input: ``(B, C, *spatial)`` with ``len(roi_size)`` spatial axes, any sizes.
        - output: ``(B, K, *spatial)``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Conv3d(1, 3, 3, padding=1)
        >>> model = SlidingWindow(net, roi_size=(8, 8, 8), overlap=0.25)
        >>> model(torch.rand(1, 1, 12, 12, 12)).shape
        torch.Size([1, 3, 12, 12, 12])
    """

    def __init__(self, model: nn.Module, roi_size: Sequence[int], overlap: float = 0.25,
                 sw_batch_size: int = 1, mode: str = "gaussian", sigma_scale: float = 0.125) -> None:
        super().__init__()
        roi = tuple(int(r) for r in roi_size)
        if len(roi) not in (2, 3) or any(r <= 0 for r in roi):
            raise ValueError(f"roi_size (--roi-size, or roi_size in model.json or the grid) must be 2 or 3 positive "
                             f"ints, one per spatial axis, got {tuple(roi_size)}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {', '.join(BLEND_MODES)}, got {mode!r}")
        self.model = model
        self.roi_size = roi
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.mode = mode
        self.sigma_scale = float(sigma_scale)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != len(self.roi_size) + 2:
            raise ValueError(f"SlidingWindow with roi_size {self.roi_size} needs input (B, C, "
                             f"{', '.join(['*'] * len(self.roi_size))}), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blended logits ``(B, K, *spatial)`` for images ``(B, C, *spatial)``.

        Args:
            x: images ``(B, C, *spatial)``, model units.

        Returns:
            Logits ``(B, K, *spatial)``, differentiable in ``x``.

        Raises:
            ValueError: ``x`` without ``len(roi_size)`` spatial axes.

        Example:
            >>> import torch
            >>> model = SlidingWindow(torch.nn.Conv2d(1, 2, 3, padding=1), roi_size=(16, 16))
            >>> model(torch.rand(2, 1, 40, 24)).shape
            torch.Size([2, 2, 40, 24])
        """
        self._check(x)
        out = sliding_window_inference(x, self.roi_size, self.sw_batch_size, self.model, overlap=self.overlap,
                                       mode=self.mode, sigma_scale=self.sigma_scale)
        if not isinstance(out, torch.Tensor):  # a tuple or dict comes only from a model that returns one
            raise TypeError(f"SlidingWindow needs a model that returns one tensor of logits, got {type(out)}")
        return out

    def loss_and_input_grad(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                            keep_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Exact gradient of ``loss_fn(self(x)).sum()`` w.r.t. ``x`` at one window's memory.

        1. assemble the logits without a graph (``forward`` under ``no_grad``);
        2. take the upstream gradient ``G = dL/dlogits`` once, on the assembled logits;
        3. re-run each window with a graph and back-propagate its slice of ``G`` weighted
           as the blend weights it (importance map / overlap count), adding into dL/dx.
        Peak memory is one window's forward+backward plus a few volume-sized buffers.

        Exact when a window's output depends only on that window (eval mode, or instance
        norm; not dropout or batch norm in training mode). Parameter ``.grad`` is untouched.

        Args:
            x: images ``(B, C, *spatial)``, model units.
            loss_fn: maps logits ``(B, K, *spatial)`` to a per-sample loss ``(B,)``.
            keep_logits: return the assembled logits. With False they are freed before the
                window pass (the caller reads what it needs inside ``loss_fn``), which saves
                K volume-sized buffers at the peak; None is returned in their place.

        Returns:
            (logits ``(B, K, *spatial)`` or None, loss ``(B,)``, grad ``(B, C, *spatial)``), detached.

        Raises:
            ValueError: ``x`` of the wrong rank, ``loss_fn`` not returning ``(B,)``, or a
                model whose output does not keep the window size.

        Example:
            >>> import torch
            >>> _ = torch.manual_seed(0)
            >>> model = SlidingWindow(torch.nn.Conv3d(1, 3, 3, padding=1), roi_size=(8, 8, 8))
            >>> x = torch.rand(1, 1, 12, 12, 12)
            >>> def loss_fn(logits):                       # per-sample loss (B,)
            ...     return logits[:, 1].flatten(1).mean(1)
            >>> logits, loss, grad = model.loss_and_input_grad(x, loss_fn)
            >>> logits.shape, loss.shape, grad.shape
            (torch.Size([1, 3, 12, 12, 12]), torch.Size([1]), torch.Size([1, 1, 12, 12, 12]))
            >>> xr = x.clone().requires_grad_(True)        # equals the full-graph gradient
            >>> (full,) = torch.autograd.grad(loss_fn(model(xr)).sum(), xr)
            >>> bool(torch.allclose(grad, full, atol=1e-5))
            True
        """
        self._check(x)
        x = x.detach()
        with torch.no_grad():
            logits = self.forward(x)
        with torch.enable_grad():
            z = logits.detach().requires_grad_(True)
            loss = loss_fn(z)
            if loss.shape != (x.shape[0],):
                raise ValueError(f"loss_fn must return a per-sample loss of shape ({x.shape[0]},), "
                                 f"got {tuple(loss.shape)}")
            (upstream,) = torch.autograd.grad(loss.sum(), z)
        loss = loss.detach()  # drop the graph: its leaf z holds the logits' storage alive
        del z
        kept = logits if keep_logits else None
        del logits  # freed before the window pass unless kept
        return kept, loss, self._backward_windows(x, upstream)

    def _backward_windows(self, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
        # MONAI has no backward-by-window; this re-enumerates its windows with its own helpers and
        # scan_interval (same padding, scan interval, slices, importance map and count map as the forward).
        nd = x.ndim - 2
        spatial = tuple(x.shape[2:])
        roi = tuple(fall_back_tuple(self.roi_size, spatial))
        image_size = tuple(max(s, r) for s, r in zip(spatial, roi))
        pad: list[int] = []
        for k in range(nd - 1, -1, -1):  # F.pad order: last axis first
            diff = max(roi[k] - spatial[k], 0)
            pad += [diff // 2, diff - diff // 2]
        crop = (slice(None), slice(None), *(slice(pad[2 * (nd - 1 - k)], pad[2 * (nd - 1 - k)] + spatial[k])
                                            for k in range(nd)))
        x_pad = F.pad(x, pad) if any(pad) else x
        if any(pad):
            g_pad = upstream.new_zeros((x.shape[0], upstream.shape[1], *image_size))
            g_pad[crop] = upstream
        else:
            g_pad = upstream  # ours (from autograd.grad), so dividing it in place is safe

        interval = scan_interval(image_size, roi, self.overlap)
        slices = dense_patch_slices(image_size, roi, interval)
        weight = compute_importance_map(roi, mode=self.mode, sigma_scale=self.sigma_scale,
                                        device=x.device, dtype=x.dtype)[None, None]
        count = torch.zeros((1, 1, *image_size), dtype=x.dtype, device=x.device)
        for s in slices:
            count[(slice(None), slice(None), *s)] += weight
        g_pad.div_(count)  # d(blend)/d(window output) = weight / count, same for every channel
        del count

        grad_pad = torch.zeros_like(x_pad)
        windows = [(b, s) for b in range(x.shape[0]) for s in slices]  # MONAI's order
        for start in range(0, len(windows), self.sw_batch_size):
            chunk = windows[start:start + self.sw_batch_size]
            idx = [(slice(b, b + 1), slice(None), *s) for b, s in chunk]
            xw = torch.cat([x_pad[i] for i in idx]).requires_grad_(True)
            with torch.enable_grad():
                out = self.model(xw)
            if tuple(out.shape[2:]) != roi:
                raise ValueError(f"SlidingWindow needs a model whose output keeps the window size {roi}, "
                                 f"got output shape {tuple(out.shape)}")
            g_win = torch.cat([g_pad[i] for i in idx]) * weight
            (gx,) = torch.autograd.grad(out, xw, g_win)
            for i, g in zip(idx, gx):
                grad_pad[i] += g[None]
        return grad_pad[crop]
