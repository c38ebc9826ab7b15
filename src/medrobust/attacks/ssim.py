"""SSIM for 2D and 3D images, equal to MONAI's ``SSIMMetric`` (Gaussian window), but fast.

Why not MONAI's: its Gaussian window is a dense ``win^d`` convolution; at 96³ with an 11³
window one forward + backward of ``SSIMLoss`` took 26 s on 2 CPU threads, 7x a 3D UNet's
forward + backward. The window is separable, so here each axis is filtered with one
matrix product by a banded ``(n - win + 1, n)`` matrix (valid filtering, as MONAI's
convolution), about 70 ms for the same call. ``SSIMReference`` also filters the fixed
image once and re-uses its statistics for every compared image (an attack's iterates).

Values: per sample ``(B,)``, the mean over channels and window positions of
``(2 μx μy + c1)(2 σxy + c2) / ((μx² + μy² + c1)(σx² + σy² + c2))`` with
``c1 = (k1·L)²``, ``c2 = (k2·L)²``, ``L = data_range``; 1 for identical images, never NaN
(constant images give 1 when equal). ``tests/attacks/test_vafa.py`` checks equality with
MONAI to 1e-5.

Block-wise (``block=``, the published VAFA's SSIM term): the images are cut into the
attack's non-overlapping blocks (:func:`medrobust.attacks.dct.block_split`), SSIM is taken
within each block (valid filtering, a window per axis; an axis shorter than the window is
not filtered, as ``pytorch_msssim``), clamped at 0 (its ``nonnegative_ssim=True``) and
averaged over the blocks and channels of a sample.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

from medrobust.attacks.dct import block_split
from medrobust.units import Scalar


@functools.lru_cache(maxsize=32)
def _window_matrix(n: int, win: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(n - win + 1, n)`` matrix whose row i holds the normalised Gaussian at i..i+win-1."""
    r = torch.arange(win, dtype=torch.float64) - win // 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    m = n - win + 1
    rows = torch.arange(m)[:, None]
    cols = rows + torch.arange(win)[None, :]
    mat = torch.zeros(m, n, dtype=torch.float64)
    mat[rows, cols] = g.expand(m, win)
    return mat.to(dtype=dtype, device=device)


def ssim_windows(spatial: Sequence[int], win_size: int = 11) -> tuple[int, ...]:
    """The Gaussian window size per spatial axis.

    ``win_size`` or, when an axis is shorter, the largest odd size that fits the shortest
    axis, the same on every axis (the rule of ``metrics.ssim``).

    Args:
        spatial: the spatial sizes of the images.
        win_size: the wanted window (default 11, as MONAI), >= 1.

    Returns:
        One (odd) window size per axis.

    Raises:
        ValueError: ``win_size`` not a positive int.

    Example:
        >>> ssim_windows((64, 64)), ssim_windows((8, 8, 8))
        ((11, 11), (7, 7, 7))
    """
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1:
        raise ValueError(f"win_size must be a positive int, got {win_size!r}")
    side = min(win_size, *(int(n) for n in spatial))
    return (side if side % 2 else side - 1,) * len(spatial)


def block_windows(block: Sequence[int], win_size: int = 3) -> tuple[int, ...]:
    """The window per block axis: ``win_size``, or 1 (no filtering) on a shorter axis.

    Args:
        block: the block size per axis.
        win_size: the wanted window (default 3, as the published VAFA), >= 1.

    Returns:
        One window size per block axis.

    Raises:
        ValueError: ``win_size`` not a positive int.

    Example:
        >>> block_windows((8, 8, 1)), block_windows((32, 2), win_size=3)
        ((3, 3, 1), (3, 1))
    """
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1:
        raise ValueError(f"win_size must be a positive int, got {win_size!r}")
    return tuple(win_size if int(b) >= win_size else 1 for b in block)


def _gauss_filter(v: torch.Tensor, wins: tuple[int, ...], sigma: float) -> torch.Tensor:
    """Valid Gaussian filtering of the trailing ``len(wins)`` axes, one product per axis."""
    k = len(wins)
    for j, w in enumerate(wins):
        if w == 1:
            continue
        axis = v.ndim - k + j
        n = v.shape[axis]
        mat = _window_matrix(n, w, float(sigma), v.dtype, v.device)
        head, tail = v.shape[:axis], v.shape[axis + 1:]
        post = math.prod(tail)
        if post == 1:
            v = (v.reshape(-1, n) @ mat.T).reshape(*head, n - w + 1)
        else:
            v = torch.matmul(mat, v.reshape(-1, n, post)).reshape(*head, n - w + 1, *tail)
    return v


class SSIMReference:
    """SSIM against a fixed image ``x`` ``(B, C, *spatial)`` (2D or 3D).

    Args:
        x: the reference image (detached; its window statistics are computed once).
        data_range: ``L``, the width of the valid range: float or ``(B,)`` tensor.
        win_size: Gaussian window (default 11, as MONAI; see :func:`ssim_windows` for
            small images; :func:`block_windows` with ``block``); ``sigma`` its standard
            deviation (1.5); ``k1``, ``k2`` as MONAI.
        block: None (default): one SSIM over the whole image; else the block size per
            trailing spatial axis: the block-wise SSIM of the module docstring.

    ``ref(y) -> (B,)`` is differentiable in ``y`` (same shape as ``x``); it raises
    ValueError for another shape.

    Raises:
        ValueError: ``x`` not 4D/5D, ``sigma`` <= 0, ``data_range`` not > 0 or of the
            wrong length.

    Shape:
        - x, y: ``(B, C, H, W)`` or ``(B, C, D, H, W)``; data_range: ``()`` or ``(B,)``.
        - output of ``ref(y)``: ``(B,)``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(2, 1, 16, 16)
        >>> ref = SSIMReference(x, data_range=1.0)
        >>> ref(x)
        tensor([1., 1.])
        >>> y = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
        >>> s = ref(y)
        >>> s.shape, bool((s < 1).all()), s.requires_grad
        (torch.Size([2]), True, True)
        >>> SSIMReference(x, 1.0, win_size=3, block=(8, 8))(x)
        tensor([1., 1.])
    """

    def __init__(self, x: torch.Tensor, data_range: Scalar, win_size: int = 11,
                 sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 block: Sequence[int] | None = None) -> None:
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        rng = torch.as_tensor(data_range, dtype=x.dtype, device=x.device).reshape(-1)
        if not bool((rng > 0).all()) or rng.numel() not in (1, x.shape[0]):
            raise ValueError(f"data_range must be > 0, a float or one per sample, got {data_range}")
        self.block = None if block is None else tuple(int(b) for b in block)
        self.wins = ssim_windows(x.shape[2:], win_size) if self.block is None else block_windows(self.block, win_size)
        self.sigma = float(sigma)
        self.shape = x.shape
        self.x = self._view(x.detach())
        shape = (-1,) + (1,) * (self.x.ndim - 1)
        self.c1 = ((k1 * rng) ** 2).reshape(shape)
        self.c2 = ((k2 * rng) ** 2).reshape(shape)
        stats = _gauss_filter(torch.stack([self.x, self.x * self.x]), self.wins, self.sigma)
        self.mu_x, self.var_x = stats[0], stats[1] - stats[0] ** 2

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` itself, or its blocks ``(B, C, *lead, *n_blocks, *block)``."""
        return v if self.block is None else block_split(v, self.block)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        """Per-sample SSIM ``(B,)`` of ``y`` (the reference's shape) against the reference."""
        if y.shape != self.shape:
            raise ValueError(f"y must have the reference's shape {tuple(self.shape)}, got {tuple(y.shape)}")
        y = self._view(y)
        stats = _gauss_filter(torch.stack([y, y * y, self.x * y]), self.wins, self.sigma)
        mu_y = stats[0]
        var_y = stats[1] - mu_y ** 2
        cov = stats[2] - self.mu_x * mu_y
        num = (2 * self.mu_x * mu_y + self.c1) * (2 * cov + self.c2)
        den = (self.mu_x ** 2 + mu_y ** 2 + self.c1) * (self.var_x + var_y + self.c2)
        ssim_map = num / den
        if self.block is None:
            return ssim_map.reshape(y.shape[0], -1).mean(1)
        per_block = ssim_map.flatten(-len(self.block)).mean(-1).clamp_min(0)
        return per_block.reshape(y.shape[0], -1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: Scalar, win_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Per-sample SSIM of ``y`` against ``x`` (see :class:`SSIMReference`).

    Args:
        x: reference images ``(B, C, *spatial)`` (2D or 3D).
        y: compared images, same shape; differentiable.
        data_range: width of the valid range, float or ``(B,)``.
        win_size: Gaussian window (default 11).
        sigma: its std (1.5).

    Returns:
        ``(B,)``; 1 for identical images.

    Raises:
        ValueError: as :class:`SSIMReference`.

    Example:
        >>> import torch
        >>> x = torch.rand(1, 1, 8, 8, 8)
        >>> ssim(x, x, 1.0)
        tensor([1.])
        >>> bool(ssim(x, x.flip(-1), 1.0) < 0.5)
        True
    """
    return SSIMReference(x, data_range, win_size, sigma)(y)
