"""Rotary position embedding against the complex-number formula, its relative-position property
and its hand-written backward."""
import math

import pytest
import torch

from delight_plugin.modules.cache import DecodingContext
from delight_plugin.modules.positions import RotaryEmbedding, rotate_pairs


def complex_rotation(x: torch.Tensor, positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Reference: channels (i, i + dim/2) as one complex number times exp(i * position * base^(-2i/dim))."""
    half = dim // 2
    freq = torch.tensor([10000.0 ** (-2 * i / dim) for i in range(half)], dtype=torch.float64)
    turn = torch.polar(torch.ones(len(positions), half, dtype=torch.float64), positions[:, None].double() * freq)
    pairs = torch.complex(x[..., :half], x[..., half:dim]) * turn
    return torch.cat([pairs.real, pairs.imag, x[..., dim:]], dim=-1)


@pytest.mark.parametrize("dim,channels", [(8, 8), (8, 14), (64, 64)])
def test_rotary_matches_the_complex_formula_on_a_strided_input(dim, channels):
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, channels, dtype=torch.float64).transpose(1, 2)  # [B, H, T, C], not contiguous
    positions = torch.arange(4, 13)
    out = RotaryEmbedding(dim).double()(x, positions)
    # The frequencies are a float32 buffer, so the angles agree to ~1e-7 relative.
    torch.testing.assert_close(out, complex_rotation(x, positions, dim), rtol=0, atol=1e-6)
    assert torch.equal(out[..., dim:], x[..., dim:])


@pytest.mark.parametrize("channels", [8, 12])
def test_one_position_with_tables_shared_by_the_blocks_matches_the_complex_formula(channels):
    """A decoding step (T = 1: ``rotate_one_position`` when all channels turn) with cos/sin shared
    through the DecodingContext (the second block reads the first one's tables) gives what the
    whole-sequence path gives, and the formula (to the float32 angles' ~1e-7 relative)."""
    torch.manual_seed(3)
    rotary = RotaryEmbedding(8).double()
    for position in (0, 7, 1000):
        ctx = DecodingContext(torch.tensor([position]))
        for _ in range(2):
            x = torch.randn(2, 3, 1, channels, dtype=torch.float64)
            out = rotary(x, ctx.positions, ctx)
            torch.testing.assert_close(out, rotate_pairs(x, *rotary.cos_sin(ctx.positions, x.dtype)), rtol=0, atol=1e-15)
            torch.testing.assert_close(out, complex_rotation(x, ctx.positions, 8), rtol=0, atol=1e-8 * (position + 10))


def test_rotated_dot_products_depend_only_on_the_distance():
    torch.manual_seed(1)
    rotary = RotaryEmbedding(16).double()
    q, k = torch.randn(2, 16, dtype=torch.float64).unbind(0)
    scores = [rotary(q.expand(1, 16), torch.tensor([p + 5])) @ rotary(k.expand(1, 16), torch.tensor([p])).T
              for p in (0, 3, 100)]
    torch.testing.assert_close(scores[0], scores[1])
    torch.testing.assert_close(scores[0], scores[2])
    # ...and do depend on it (an identity rotation would pass the two checks above).
    one_closer = rotary(q[None], torch.tensor([4])) @ rotary(k[None], torch.tensor([0])).T
    assert not math.isclose(float(scores[0]), float(one_closer), rel_tol=1e-6)


def test_rotary_backward_and_double_backward_match_finite_differences():
    torch.manual_seed(2)
    rotary = RotaryEmbedding(6).double()
    positions = torch.arange(3, 8)
    x = torch.randn(2, 5, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rotary(t, positions), (x,))
    assert torch.autograd.gradgradcheck(lambda t: rotary(t, positions), (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rotary_keeps_a_half_precision_dtype(dtype):
    x = torch.randn(1, 2, 4, 8).to(dtype)
    out = RotaryEmbedding(8)(x, torch.arange(4))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), RotaryEmbedding(8)(x.float(), torch.arange(4)), rtol=2e-2, atol=2e-2)
