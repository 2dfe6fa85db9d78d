"""The plugin's dropout (delight_plugin/modules/dropout.py): Bernoulli masks from packed 16-bit draws
on CPU. Each element is dropped independently with probability p (rounded to 2^-16), every lane of
a draw alike, the kept ones scaled to keep the mean; gradients go through the same mask; it is
seeded like torch's; the models use it."""
import math

import pytest
import torch
from torch import nn

from delight_plugin.modules.dropout import LEVELS, Dropout, dropout, keep_mask


def test_drop_rate_is_p_in_every_lane_and_kept_values_are_scaled():
    torch.manual_seed(0)
    p, n = 0.1, 3 * 200_000
    mask = keep_mask((n,), p)
    dropped = round(p * LEVELS) / LEVELS
    values = mask.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / (1 - dropped), rel=1e-7)]
    sigma = math.sqrt(p * (1 - p) / (n // 3))
    for lane in range(3):  # the three 16-bit numbers of each 64-bit draw: a biased lane would show here
        rate = (mask[lane::3] == 0).double().mean().item()
        assert abs(rate - p) < 5 * sigma, (lane, rate)
    # neighbours are independent: P(both dropped) = p^2
    both = ((mask[:-1] == 0) & (mask[1:] == 0)).double().mean().item()
    assert abs(both - p * p) < 5 * math.sqrt(p * p / n)


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9])
def test_other_rates_and_unbiased_mean(p):
    torch.manual_seed(1)
    x = torch.full((400, 1000), 2.0)
    out = dropout(x, p)
    rate = (out == 0).double().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / x.numel())
    assert abs(out.double().mean().item() - 2.0) < 5 * 2.0 * math.sqrt(p / (1 - p) / x.numel())


def test_gradient_uses_the_forward_mask():
    torch.manual_seed(2)
    x = torch.randn(7, 13, 5, requires_grad=True)
    out = dropout(x, 0.25)
    out.backward(torch.ones_like(out))
    scale = 1 / (1 - round(0.25 * LEVELS) / LEVELS)
    torch.testing.assert_close(x.grad, (out != 0).float() * scale)
    torch.testing.assert_close(out, x.detach() * x.grad, rtol=0, atol=0)


def test_seeded_like_torch_and_shapes_dtypes_kept():
    torch.manual_seed(3)
    a = dropout(torch.ones(5, 17), 0.2)
    torch.manual_seed(3)
    b = dropout(torch.ones(5, 17), 0.2)
    assert torch.equal(a, b) and a.shape == (5, 17)
    half = dropout(torch.ones(4, 9, dtype=torch.bfloat16), 0.2)
    assert half.dtype == torch.bfloat16 and half.shape == (4, 9)
    strided = torch.ones(6, 8).t()  # not contiguous
    assert dropout(strided, 0.5).shape == (8, 6)


def test_identity_when_off_and_zeros_at_one():
    x = torch.randn(3, 4)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    module = Dropout(0.3).eval()
    assert module(x) is x
    module.make_generation_fast_("m", retain_dropout=True, retain_dropout_modules=None)
    assert (module(torch.ones(1000)) == 0).any()  # --retain-dropout keeps it at inference
    with pytest.raises(ValueError, match="between 0 and 1"):
        Dropout(1.5)


@pytest.mark.parametrize("arch", ["delight_transformer_lm", "gau_lm", "plain_lm", "delight_transformer"])
def test_models_use_it(arch, tmp_path):
    from fairseq.modules import FairseqDropout

    from delight_plugin.building import build_as_fairseq_train, synthetic_dictionary

    task = ["--task", "translation", "--source-lang", "src", "--target-lang", "tgt"] if arch == "delight_transformer" else []
    data = synthetic_dictionary(64, tmp_path, langs=("src", "tgt") if task else ())
    model = build_as_fairseq_train(arch, ["--tokens-per-sample", "16"] if not task else [], data,
                                   task=task[1] if task else "language_modeling", task_flags=task[2:]).model
    dropouts = [m for m in model.modules() if isinstance(m, (nn.Dropout, FairseqDropout))]
    assert dropouts and all(type(m) is Dropout for m in dropouts), {type(m) for m in dropouts}
