"""Half precision on CPU, for every language-model architecture, before any GPU runs it.

A training step under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and one of the model converted
with ``.to(torch.bfloat16)`` (what fairseq's ``--bf16`` does) must give a finite loss and gradients
close to the float32 step; a float16 forward pass must be finite and close to float32. Dropout is
off so the three runs compute the same function.

Tolerances (bfloat16 keeps 8 bits of mantissa, a relative rounding of 2^-9 = 0.2% per operation):
loss within 0.05 of float32 (about 1% of the ~4.6 nats of a 100-word model at initialisation); all
gradients together within 5% of float32 in relative L2 norm, and each parameter's gradient whose
norm is not negligible (>= 1% of the largest) within 15%; float16 log-probabilities within 0.02.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from delight_plugin.benchmark.subjects import FairseqMeasured
from delight_plugin.modules.group_attention import group_attention
from delight_plugin.modules.linformer import prefix_compressed_attention

LM_ARCHS = harness.lm_archs()


def no_dropout(model):
    """Training mode (the path fairseq-train takes) with every dropout probability at 0."""
    model.train()
    for module in model.modules():
        for name in ("p", "dropout", "dropout_p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    return model


def loss_and_grads(model, tokens, autocast_dtype=None):
    """Mean next-token NLL and float32 copies of the gradients. The loss is the benchmark's (fairseq's
    cross-entropy, or adaptive_loss for an adaptive softmax), computed inside autocast as fairseq's
    train_step does; fairseq's log_softmax casts to float32 first."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        loss = FairseqMeasured(model, harness.VOCAB).training_loss(tokens)
    loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def assert_close_to_fp32(loss, grads, want_loss, want_grads, what):
    assert torch.isfinite(torch.tensor(loss)), f"{what}: loss {loss}"
    assert abs(loss - want_loss) <= 0.05, f"{what}: loss {loss:.4f} vs float32 {want_loss:.4f}"
    assert grads.keys() == want_grads.keys(), f"{what}: parameters with gradients differ"
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f"{what}: non-finite gradients in {bad[:5]}"
    diff = torch.cat([(grads[n] - want_grads[n]).flatten() for n in grads]).norm()
    total = torch.cat([g.flatten() for g in want_grads.values()]).norm()
    assert diff <= 0.05 * total, f"{what}: gradients differ from float32 by {diff / total:.3%} (> 5%)"
    largest = max(g.norm() for g in want_grads.values())
    for name, want in want_grads.items():
        if want.norm() >= 0.01 * largest:
            err = (grads[name] - want).norm() / want.norm()
            assert err <= 0.15, f"{what}: gradient of {name} differs from float32 by {err:.1%} (> 15%)"


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_bfloat16_training_step_matches_float32(arch):
    model, _ = harness.build(arch, harness.tiny_flags(arch))
    no_dropout(model)
    tokens = harness.random_tokens(2, 41)  # 40 positions: five groups / chunks of 8, and not a power of two
    want_loss, want_grads = loss_and_grads(model, tokens)
    again, _ = loss_and_grads(model, tokens)
    assert again == want_loss, "dropout is not off: two float32 steps differ"

    loss, grads = loss_and_grads(model, tokens, autocast_dtype=torch.bfloat16)
    assert_close_to_fp32(loss, grads, want_loss, want_grads, "autocast bfloat16")

    model.to(torch.bfloat16)
    loss, grads = loss_and_grads(model, tokens)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert_close_to_fp32(loss, grads, want_loss, want_grads, ".to(bfloat16)")


@pytest.mark.parametrize("arch", LM_ARCHS)
def test_float16_forward_matches_float32(arch):
    model, _ = harness.build(arch, harness.tiny_flags(arch))
    model.eval()
    tokens = harness.random_tokens(2, 40)
    want = harness.log_probs(model, tokens)
    model.half()
    try:
        got = harness.log_probs(model, tokens)
    except RuntimeError as err:  # an op without a CPU float16 kernel in this torch build
        if "not implemented for 'Half'" in str(err):
            pytest.skip(f"CPU float16: {err}")
        raise
    assert torch.isfinite(got).all()
    diff = (got - want).abs().max().item()
    assert diff <= 0.02, f"float16 log-probabilities differ from float32 by {diff:.3g}"


# ------------------------------------------------------------------------------------------------
# The custom pieces where half precision goes wrong first
# ------------------------------------------------------------------------------------------------

def flash_inputs(groups=6, size=8, s=4, e=6, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch * groups, size, w, generator=g, dtype=torch.float64) for w in (s, s, s, s, e)]


def test_group_attention_under_autocast_takes_mixed_dtypes_and_returns_their_gradients():
    """Under autocast q and k come from float32 scales and v from a bfloat16 projection: the Function
    must accept the mix, compute in bfloat16, and give every input a gradient of its own dtype."""
    inputs = flash_inputs()
    bias = torch.randn(8, 8, dtype=torch.float64) * 0.1
    want = group_attention(*inputs, bias, 6, 0.125, "relu_squared")
    mixed = [x.float() for x in inputs[:4]] + [inputs[4].bfloat16()]
    mixed = [x.clone().requires_grad_() for x in mixed] + [bias.float().requires_grad_()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = group_attention(*mixed[:5], mixed[5], 6, 0.125, "relu_squared")
    assert out.dtype == torch.bfloat16
    err = ((out.double() - want).norm() / want.norm()).item()
    assert err <= 0.02, f"bfloat16 output differs from float64 by {err:.2%}"
    out.float().square().sum().backward()
    assert [x.grad.dtype for x in mixed] == [x.dtype for x in mixed]
    assert all(torch.isfinite(x.grad).all() for x in mixed)


def test_running_sums_of_decoding_states_stay_float32():
    """Linformer's K~, V~ gain a term per token, FLASH's sum a term per group: in bfloat16 such a sum
    stops growing once it is 2^8 times a term. 1,500 bfloat16 Linformer steps keep the state within
    1% of the float64 sum of the same bfloat16 terms (a bfloat16 state was 4.6% off)."""
    steps, slots, dim = 1500, 4, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, steps, dim, generator=g).bfloat16() for _ in range(3))
    e = torch.randn(1, slots, steps, generator=g).bfloat16()
    scale = torch.ones(1, 1, dtype=torch.bfloat16)
    state = None
    for t in range(steps):
        _, _, state = prefix_compressed_attention(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                                  e[:, :, t:t + 1], e[:, :, t:t + 1], scale, None, 8, state=state)
    assert state[0].dtype == torch.float32
    want = torch.einsum("hst,bhtd->bhsd", e.double(), k.double())
    err = ((state[0].double() - want).norm() / want.norm()).item()
    assert err <= 0.01, f"the decoding state drifted {err:.2%} from the sum of its terms"

    model, _ = harness.build("gau_lm_flash", harness.tiny_flags("gau_lm_flash"))
    model.eval().to(torch.bfloat16)
    state = {}
    with torch.no_grad():
        model.decoder(harness.random_tokens(1, 20), incremental_state=state)  # prefill: 2 groups of 8 done
        model.decoder(harness.random_tokens(1, 21), incremental_state=state)
    sums = [v["earlier_kv"] for v in state.values() if "earlier_kv" in v]
    assert len(sums) == 2 and all(s.dtype == torch.float32 for s in sums)


# ------------------------------------------------------------------------------------------------
# scripts/gpu_check.sh (no GPU here: its logic runs on the CPU with --cpu --bf16)
# ------------------------------------------------------------------------------------------------

GPU_CHECK = harness.REPO / "scripts" / "gpu_check.sh"


def run_gpu_check(*args, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(GPU_CHECK), "--output-dir", str(tmp_path), *args],
                          capture_output=True, text=True, env=env)


def test_gpu_check_needs_a_gpu(tmp_path):  # shellcheck-clean: tests/test_packaging.py
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run the script itself")
    proc = run_gpu_check(tmp_path=tmp_path)
    assert proc.returncode == 2 and "needs a GPU" in proc.stderr, proc.stderr
    proc = run_gpu_check("--precisions", "fp32", tmp_path=tmp_path)
    assert proc.returncode == 2 and "--precisions" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_gpu_check_trains_with_bf16_and_reports_on_the_cpu(tmp_path):
    proc = run_gpu_check("--cpu", "--archs", "gau_lm_flash", "--size", "tiny", "--updates", "2",
                         "--precisions", "bf16", "--no-benchmark", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| gau_lm_flash | --bf16 | loss " in summary, summary
