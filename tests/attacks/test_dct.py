"""Block DCT: against scipy per block, exact inversion, padding, gradients, errors."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from medrobust.attacks.dct import block_dct, block_idct, dct_matrix, dct_nd


def _scipy_blocks(x: np.ndarray, block: tuple[int, ...], pad: str = "edge") -> np.ndarray:
    """Reference: pad with numpy, then scipy dctn per block, looping over blocks."""
    k = len(block)
    sizes = x.shape[-k:]
    padded = [-(-s // b) * b for s, b in zip(sizes, block)]
    widths = [(0, 0)] * (x.ndim - k) + [(0, p - s) for p, s in zip(padded, sizes)]
    xp = np.pad(x, widths, mode=pad)
    n_blocks = [p // b for p, b in zip(padded, block)]
    out = np.zeros((*x.shape[:-k], *n_blocks, *block))
    for idx in np.ndindex(*n_blocks):
        sl = tuple(slice(i * b, (i + 1) * b) for i, b in zip(idx, block))
        out[(Ellipsis, *idx, *[slice(None)] * k)] = scipy.fft.dctn(
            xp[(Ellipsis, *sl)], axes=tuple(range(-k, 0)), norm="ortho")
    return out


@pytest.mark.parametrize("shape, block", [
    ((2, 3, 16, 16), (8, 8)),
    ((1, 2, 16, 24, 8), (8, 8, 4)),
    ((2, 1, 13, 11, 7), (4, 4, 4)),        # odd sizes, padded
    ((1, 1, 5, 12, 9), (4, 4)),            # VAFA-2D: 2D blocks per slice of a volume
    ((1, 1, 9, 5, 6), (4, 1, 3)),          # block 1: an untransformed axis
])
def test_block_dct_matches_scipy_per_block(shape: tuple[int, ...], block: tuple[int, ...]) -> None:
    x = torch.randn(*shape, dtype=torch.float64)
    got = block_dct(x, block)
    ref = _scipy_blocks(x.numpy(), block)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)


def test_zero_padding_matches_scipy() -> None:
    x = torch.randn(1, 1, 7, 10, dtype=torch.float64)
    got = block_dct(x, (4, 4), pad="zero")
    np.testing.assert_allclose(got.numpy(), _scipy_blocks(x.numpy(), (4, 4), pad="constant"), atol=1e-10)


@pytest.mark.parametrize("shape, block", [
    ((1, 1, 32, 32, 32), (8, 8, 8)),
    ((2, 1, 17, 9, 23), (8, 8, 8)),
    ((1, 2, 33, 15), (16, 16)),
    ((1, 1, 6, 19, 21), (8, 8)),
])
@pytest.mark.parametrize("pad", ["replicate", "zero"])
def test_inversion_is_exact_float32(shape: tuple[int, ...], block: tuple[int, ...], pad: str) -> None:
    x = torch.rand(*shape) * 2 - 0.5
    back = block_idct(block_dct(x, block, pad=pad), block, x.shape)
    assert back.shape == x.shape
    assert (back - x).abs().max() < 1e-5


def test_constant_block_is_only_dc() -> None:
    x = torch.full((1, 1, 8, 8, 8), 0.7)
    c = block_dct(x, (8, 8, 8))
    assert c[..., 0, 0, 0].item() == pytest.approx(0.7 * 8 ** 1.5, rel=1e-6)
    ac = c.clone()
    ac[..., 0, 0, 0] = 0
    assert ac.abs().max() < 1e-5
    assert (block_idct(c, (8, 8, 8), x.shape) - x).abs().max() < 1e-6
    assert torch.isfinite(c).all()


def test_dct_matrix_orthonormal_and_cached() -> None:
    m = dct_matrix(12, torch.float64)
    assert torch.allclose(m @ m.T, torch.eye(12, dtype=torch.float64), atol=1e-12)
    assert dct_matrix(12, torch.float64) is m
    with pytest.raises(ValueError, match="DCT size"):
        dct_matrix(0)


def test_gradients_flow_through_dct_and_inverse() -> None:
    x = torch.randn(1, 1, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block_dct(t, (4, 4, 4)), (x,))
    c = torch.randn(1, 1, 2, 2, 2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block_idct(t, (4, 4, 4), (1, 1, 5, 6, 7)), (c,))
    assert torch.autograd.gradcheck(lambda t: dct_nd(t, (2, 3, 4)), (x,))


def test_dct_nd_matches_scipy() -> None:
    x = torch.randn(2, 3, 6, 5, 7, dtype=torch.float64)
    ref = scipy.fft.dctn(x.numpy(), axes=(2, 3, 4), norm="ortho")
    np.testing.assert_allclose(dct_nd(x, (2, 3, 4)).numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(dct_nd(x, (-1,)).numpy(), scipy.fft.dct(x.numpy(), axis=-1, norm="ortho"), atol=1e-10)


@pytest.mark.parametrize("block, match", [
    ((8, 8, 8), "block_size"),        # 3D block on 2D data
    ((0, 4), "block_size"),
    ((4.5, 4), "block_size"),
    ((), "block_size"),
])
def test_bad_block_sizes(block: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        block_dct(torch.zeros(1, 1, 16, 16), block)


def test_other_errors() -> None:
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="pad"):
        block_dct(x, (4, 4), pad="reflect")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coeffs"):
        block_idct(torch.zeros(1, 1, 2, 2, 4, 4), (4, 4), (1, 1, 12, 8))
    with pytest.raises(ValueError, match="dims"):
        dct_nd(x, (4,))
    with pytest.raises(ValueError, match="dims"):
        dct_nd(x, (2, -2))
