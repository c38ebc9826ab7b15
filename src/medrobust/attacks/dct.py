"""Orthonormal DCT-II over non-overlapping blocks and over whole tensors (design.md section 5).

``block_dct`` / ``block_idct`` split the trailing spatial axes of an image tensor into
non-overlapping blocks and apply the orthonormal DCT-II (``scipy.fft.dctn(norm="ortho")``)
to every block at once, as one matrix product per transformed axis on a *view* of the
volume; there is no Python loop over blocks and no copy into a block array.

Block sizes are matched to the **trailing** spatial axes:

- ``(B, C, H, W)`` with ``(bh, bw)``: 2D blocks.
- ``(B, C, D, H, W)`` with ``(bd, bh, bw)``: 3D blocks.
- ``(B, C, D, H, W)`` with ``(bh, bw)``: 2D blocks on the last two axes of every slice
  ``x[:, :, d]`` (VAFA-2D). A block size of 1 leaves an axis untransformed (the DCT of
  length 1 is the identity), so ``(bh, 1, bw)`` blocks the first and last axes per slice
  of the middle one.

Coefficient layout: ``(B, C, *lead, *n_blocks, *block)`` where ``lead`` are the spatial
axes in front of the blocked ones and ``n_blocks[i] = ceil(size_i / block_i)``; entry
``[..., n1, n2, n3, k1, k2, k3]`` is frequency ``(k1, k2, k3)`` of block ``(n1, n2, n3)``.
The returned tensor is a permuted view of the transformed (padded) volume, so
elementwise work on it (``torch.full_like`` keeps its strides) and ``block_idct`` copy
nothing.

Padding: axes that are not a multiple of the block are padded at the end before the
transform, by default by replicating the edge voxel (``pad="replicate"``; smooth, so a
coarse quantisation of a padded block does not ring into the real voxels) or with zeros
(``pad="zero"``), and ``block_idct`` crops back to ``original_shape``.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["replicate", "zero"]
PAD_MODES: tuple[str, ...] = ("replicate", "zero")


@functools.lru_cache(maxsize=64)
def dct_matrix(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
    """Orthonormal DCT-II matrix ``M`` of shape ``(n, n)``: ``dct(v) = M @ v``, ``M.T == M^-1``.

    ``M[k, i] = sqrt(2/n) * cos(pi * (2i + 1) * k / (2n))``, row 0 scaled by ``1/sqrt(2)``;
    built in float64, cast to ``dtype`` and cached per (n, dtype, device).

    Args:
        n: transform length >= 1.
        dtype: dtype of the result (default float32).
        device: device of the result (default CPU).

    Returns:
        ``(n, n)`` matrix; row k is frequency k.

    Raises:
        ValueError: ``n`` < 1.

    Example:
        >>> import torch
        >>> m = dct_matrix(4)
        >>> m.shape, bool(torch.allclose(m @ m.T, torch.eye(4), atol=1e-6))
        (torch.Size([4, 4]), True)
        >>> m @ torch.ones(4)                      # a constant has only the DC term
        tensor([2., 0., 0., 0.])
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(dtype=dtype, device=device)


def _check_blocks(shape: Sequence[int], block_size: Sequence[int], name: str = "block_size") -> tuple[int, ...]:
    block = tuple(int(b) for b in block_size)
    if any(b != s for b, s in zip(block, block_size)) or not block or any(b < 1 for b in block):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {tuple(block_size)}")
    spatial = len(shape) - 2
    if len(block) > spatial:
        raise ValueError(f"{name} {block} has {len(block)} axes but the tensor of shape {tuple(shape)} "
                         f"has only {spatial} spatial axes (layout (B, C, *spatial))")
    return block


def _padded_sizes(sizes: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    return tuple(-(-s // b) * b for s, b in zip(sizes, block))


def _transform_axes(v: torch.Tensor, block: tuple[int, ...], inverse: bool) -> torch.Tensor:
    """Apply the 1D (inverse) DCT along each blocked trailing axis of ``v``, block by block.

    ``v`` has the padded shape; for axis ``j`` it is viewed as ``(pre * n_j, b_j, post)`` and
    multiplied by the ``b_j x b_j`` matrix, which transforms every block along that axis
    in one (batched) GEMM. One product per axis; axes with block 1 are skipped.
    """
    shape = v.shape
    k = len(block)
    for j, b in enumerate(block):
        if b == 1:
            continue
        m = dct_matrix(b, v.dtype, v.device)
        if inverse:
            m = m.T
        axis = len(shape) - k + j
        post = math.prod(shape[axis + 1:])
        if post == 1:  # last axis: a single (N, b) @ (b, b) product
            v = (v.reshape(-1, b) @ m.T).reshape(shape)
        else:
            v = torch.matmul(m, v.reshape(-1, b, post)).reshape(shape)
    return v


def _pad_to_blocks(x: torch.Tensor, block: tuple[int, ...], pad: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``x`` padded at the end of its trailing ``len(block)`` axes to multiples of the block."""
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
    k = len(block)
    sizes = tuple(x.shape[-k:])
    padded = _padded_sizes(sizes, block)
    if padded != sizes:
        widths = [0] * (2 * (x.ndim - 2))  # F.pad order: last axis first, (before, after) pairs
        for j in range(k):
            widths[2 * (k - 1 - j) + 1] = padded[j] - sizes[j]
        x = F.pad(x, widths, mode="constant" if pad == "zero" else "replicate")
    return x, padded


def _as_blocks(v: torch.Tensor, block: tuple[int, ...], padded: tuple[int, ...]) -> torch.Tensor:
    """The padded ``v`` viewed as ``(B, C, *lead, *n_blocks, *block)`` (a permuted view)."""
    k = len(block)
    lead = tuple(v.shape[:-k])
    n_blocks = tuple(p // b for p, b in zip(padded, block))
    inter = [d for pair in zip(n_blocks, block) for d in pair]  # n1, b1, n2, b2, ...
    nl = len(lead)
    order = list(range(nl)) + [nl + 2 * j for j in range(k)] + [nl + 2 * j + 1 for j in range(k)]
    return v.reshape(*lead, *inter).permute(order)


def block_split(x: torch.Tensor, block_size: Sequence[int], pad: PadMode = "replicate") -> torch.Tensor:
    """The non-overlapping blocks of the trailing spatial axes, untransformed (a view).

    The layout of :func:`block_dct` (the same padding), for block-wise statistics such as
    the published VAFA's block-wise SSIM.

    Args:
        x: ``(B, C, *spatial)`` tensor.
        block_size: one size per trailing spatial axis it covers.
        pad: "replicate" (default) or "zero" padding for axes that are not a multiple
            of the block.

    Returns:
        ``(B, C, *lead, *n_blocks, *block)``; entry ``[..., n1, n2, k1, k2]`` is voxel
        ``(k1, k2)`` of block ``(n1, n2)``.

    Raises:
        ValueError: unknown ``pad`` or a bad ``block_size`` (as :func:`block_dct`).

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> block_split(x, (2, 2))[0, 0, 0, 1]     # the top-right 2 x 2 block
        tensor([[2., 3.],
                [6., 7.]])
    """
    block = _check_blocks(x.shape, block_size)
    v, padded = _pad_to_blocks(x, block, pad)
    return _as_blocks(v, block, padded)


def block_dct(x: torch.Tensor, block_size: Sequence[int], pad: PadMode = "replicate") -> torch.Tensor:
    """Orthonormal DCT-II of every non-overlapping block of the trailing spatial axes.

    Args:
        x: ``(B, C, *spatial)`` float tensor (any units; the transform is linear).
        block_size: one size per trailing spatial axis it covers (see module docstring).
        pad: "replicate" (default) or "zero" padding for axes that are not a multiple
            of the block.

    Returns:
        Coefficients ``(B, C, *lead, *n_blocks, *block)`` in the units of ``x``.

    Raises:
        ValueError: unknown ``pad``, or a ``block_size`` with more axes than ``x`` has
            spatial axes or with non-positive sizes.

    Shape:
        - x: ``(B, C, *spatial)``; output: ``(B, C, *lead, *n_blocks, *block)`` with
          ``n_blocks[i] = ceil(size_i / block_i)``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 10, 8, 8)
        >>> block_dct(x, (4, 4, 4)).shape          # 10 is padded to 12: 3 blocks
        torch.Size([2, 1, 3, 2, 2, 4, 4, 4])
        >>> block_dct(x, (4, 4)).shape             # 2D blocks on every slice x[:, :, d]
        torch.Size([2, 1, 10, 2, 2, 4, 4])
        >>> block_dct(torch.ones(1, 1, 4, 4), (4, 4))[0, 0, 0, 0, 0]
        tensor([4., 0., 0., 0.])
    """
    block = _check_blocks(x.shape, block_size)
    v, padded = _pad_to_blocks(x, block, pad)
    return _as_blocks(_transform_axes(v, block, inverse=False), block, padded)


def block_idct(coeffs: torch.Tensor, block_size: Sequence[int], original_shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`block_dct`: coefficients back to an image, padding cropped away.

    Args:
        coeffs: coefficients ``(B, C, *lead, *n_blocks, *block)`` as :func:`block_dct` gives.
        block_size: the block used by :func:`block_dct`.
        original_shape: ``(B, C, *spatial)`` of the image before padding.

    Returns:
        The image of ``original_shape``, units of the coefficients.

    Raises:
        ValueError: coefficients whose shape does not fit ``block_size`` and ``original_shape``.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 10, 8, 8)
        >>> c = block_dct(x, (4, 4, 4))
        >>> bool(torch.allclose(block_idct(c, (4, 4, 4), x.shape), x, atol=1e-5))
        True
    """
    original_shape = tuple(int(s) for s in original_shape)
    block = _check_blocks(original_shape, block_size)
    k = len(block)
    sizes = original_shape[-k:]
    padded = _padded_sizes(sizes, block)
    n_blocks = tuple(p // b for p, b in zip(padded, block))
    lead = original_shape[:-k]
    expected = (*lead, *n_blocks, *block)
    if tuple(coeffs.shape) != expected:
        raise ValueError(f"coeffs has shape {tuple(coeffs.shape)}, but block_size {block} and "
                         f"original_shape {original_shape} need {expected}")
    nl = len(lead)
    order = list(range(nl)) + [i for j in range(k) for i in (nl + j, nl + k + j)]
    v = coeffs.permute(order).reshape(*lead, *padded)
    v = _transform_axes(v, block, inverse=True)
    if padded != sizes:
        crop = tuple(slice(0, s) for s in sizes)
        v = v[(slice(None),) * (v.ndim - len(crop)) + crop]
    return v


def dct_nd(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Orthonormal DCT-II of the whole tensor along ``dims``; differentiable.

    Used e.g. on the spatial axes of a logit patch for VAFT's frequency-consistency loss;
    equals ``scipy.fft.dctn(x, axes=dims, norm="ortho")``.

    Args:
        x: any float tensor.
        dims: distinct axes to transform (negative allowed).

    Returns:
        The coefficients, same shape, dtype and units as ``x``.

    Raises:
        ValueError: repeated or out-of-range ``dims``.

    Example:
        >>> import torch
        >>> dct_nd(torch.ones(1, 2, 4), dims=(-1,))
        tensor([[[2., 0., 0., 0.],
                 [2., 0., 0., 0.]]])
    """
    dims = tuple(int(d) for d in dims)
    axes = sorted({d % x.ndim for d in dims if -x.ndim <= d < x.ndim})
    if len(axes) != len(dims):
        raise ValueError(f"dims must name distinct axes of a {x.ndim}-D tensor, got {tuple(dims)}")
    for d in axes:
        m = dct_matrix(x.shape[d], x.dtype, x.device)
        x = torch.movedim(torch.movedim(x, d, -1) @ m.T, -1, d)
    return x
