"""FLASH's mixed chunk attention for whole sequences, as one autograd Function with its own backward.

Inputs are grouped [N, C, *] (N = batch x groups, G groups per sequence). For a query i of a group:

    out_i = sum_{j <= i in its group} f(scale q_i . k_j + bias_ij) v_j + scale lin_q_i . sum_{earlier groups} lin_k^T v

with f = relu^2 or Mega's Laplace function. ``ChunkedAttention`` computes the same formula through
autograd when the weights get dropout; the tests compare both with autograd through one dense masked
matrix. This version is faster on long sequences because:
  * the first half of a group's queries only sees the first half of its keys, so a group is two
    products (C/2 x C/2 and C/2 x C) and the all-zero quarter of the weights is never formed;
  * the backward accumulates gradients in place (both halves and the linear part into one dv),
    where autograd would allocate, zero-fill and add a tensor per use;
  * every batched product writes a whole contiguous tensor: ``baddbmm_`` into a half-group view
    (strided across groups) falls back to one matmul per group on CPU;
  * relu^2 keeps only relu(logits) for the backward (the weights are its square, the derivative twice it).
"""
import functools
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .attention import causal_mask
from .prefix_sum import accumulator, exclusive_prefix_sum

_LAPLACE_MU, _LAPLACE_SIGMA = math.sqrt(0.5), math.sqrt(1.0 / (4.0 * math.pi))


def laplace(x: Tensor) -> Tensor:
    """Mega's Laplace attention function: a bounded, smooth stand-in for relu^2."""
    return 0.5 * (1.0 + torch.erf((x - _LAPLACE_MU) / (_LAPLACE_SIGMA * math.sqrt(2.0))))


def laplace_derivative(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * ((x - _LAPLACE_MU) / _LAPLACE_SIGMA) ** 2) / (_LAPLACE_SIGMA * math.sqrt(2.0 * math.pi))


def group_parts(size: int) -> List[Tuple[slice, slice]]:
    """(queries, keys) blocks of a causal group: halves for an even size of 32 or more."""
    if size % 2 or size < 32:
        return [(slice(0, size), slice(0, size))]
    half = size // 2
    return [(slice(0, half), slice(0, half)), (slice(half, size), slice(0, size))]


def _hide_future(x: Tensor) -> Tensor:
    """Zero x [N, Tq, Tk] in place where a key comes after its query (the Tq queries are the last Tq
    of the Tk positions)."""
    visible = causal_mask(x.size(1), x.size(2), x.device)
    return x if visible is None else x.masked_fill_(~visible, 0.0)


def compute_dtype(device_type: str, tensors) -> torch.dtype:
    """What the products run in: autocast's dtype when it is on for this device (the Function's
    ops bypass autocast, and its backward would run outside it), else the inputs' common dtype."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


class GroupAttentionFunction(torch.autograd.Function):
    """Inputs may mix dtypes (under autocast, q and k come from float32 scales, v from a bfloat16
    projection): everything runs in ``compute_dtype`` with autocast off, the cross-group sums
    accumulate in float32 (a bfloat16 running sum over many groups would lose the small terms),
    and each gradient is returned in its input's dtype."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, bias: Optional[Tensor],
                groups: int, scale: float, relu_squared: bool) -> Tensor:
        inputs = (q, k, lin_q, lin_k, v) + ((bias,) if bias is not None else ())
        ctx.input_dtypes = [t.dtype for t in inputs]
        dtype = compute_dtype(v.device.type, inputs)
        q, k, lin_q, lin_k, v = (t.to(dtype) for t in (q, k, lin_q, lin_k, v))
        bias = None if bias is None else bias.to(dtype)
        with torch.autocast(v.device.type, enabled=False):
            return GroupAttentionFunction._forward(ctx, q, k, lin_q, lin_k, v, bias, groups, scale, relu_squared)

    @staticmethod
    def _forward(ctx, q, k, lin_q, lin_k, v, bias, groups, scale, relu_squared):
        num, size, width = v.shape
        group_kv = torch.bmm(lin_k.transpose(1, 2), v).view(-1, groups, lin_k.size(-1), width)
        earlier_kv = exclusive_prefix_sum(accumulator(group_kv)).mul_(scale).to(v.dtype).reshape(num, -1, width)
        scaled_q = q * scale
        saved, outs = [], []
        for queries, keys in group_parts(size):
            logits = torch.bmm(scaled_q[:, queries], k[:, keys].transpose(1, 2))
            if bias is not None:
                logits += bias[queries, keys]
            if relu_squared:
                root = _hide_future(logits.relu_())
                weights = root * root
                saved.append(root)
            else:
                weights = _hide_future(laplace(logits))
                saved.append(logits)
            part = torch.bmm(lin_q[:, queries], earlier_kv)
            outs.append(part.baddbmm_(weights, v[:, keys]))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        ctx.save_for_backward(q, k, lin_q, lin_k, v, earlier_kv, *saved)
        ctx.groups, ctx.scale, ctx.relu_squared, ctx.has_bias = groups, scale, relu_squared, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        with torch.autocast(grad.device.type, enabled=False):
            grads = GroupAttentionFunction._backward(ctx, grad)
        grads = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.input_dtypes)]
        return (*grads[:5], grads[5] if ctx.has_bias else None, None, None, None)

    @staticmethod
    def _backward(ctx, grad: Tensor):
        q, k, lin_q, lin_k, v, earlier_kv, *saved = ctx.saved_tensors
        num, size, width = v.shape
        grad = grad.to(v.dtype).contiguous()
        # Across groups: out += lin_q earlier_kv, earlier_kv = scale * exclusive cumsum of lin_k^T v.
        grad_earlier = torch.bmm(lin_q.transpose(1, 2), grad).view(-1, ctx.groups, lin_q.size(-1), width)
        grad_group_kv = (exclusive_prefix_sum(accumulator(grad_earlier), reverse=True).mul_(ctx.scale).to(v.dtype)
                         .reshape(num, -1, width))
        grad_lin_q = torch.bmm(grad, earlier_kv.transpose(1, 2))
        grad_lin_k = torch.bmm(v, grad_group_kv.transpose(1, 2))
        grad_v = torch.bmm(lin_k, grad_group_kv)
        # Within groups. Products go into contiguous tensors (baddbmm_ into a strided view of a
        # group's rows falls back to one matmul per group on CPU).
        grad_q_parts, grad_k = [], None
        grad_bias = q.new_zeros(size, size) if ctx.has_bias else None
        for (queries, keys), kept in reversed(list(zip(group_parts(size), saved))):  # all keys first
            grad_weights = torch.bmm(grad[:, queries], v[:, keys].transpose(1, 2))
            if ctx.relu_squared:
                weights = kept * kept
                grad_logits = grad_weights.mul_(kept).mul_(2.0)  # kept is 0 where masked
            else:
                weights = _hide_future(laplace(kept))
                grad_logits = _hide_future(grad_weights.mul_(laplace_derivative(kept)))
            grad_q_parts.insert(0, torch.bmm(grad_logits, k[:, keys]))
            if grad_k is None:  # this part sees every key of its group
                grad_k = torch.bmm(grad_logits.transpose(1, 2), q[:, queries])
                grad_v.baddbmm_(weights.transpose(1, 2), grad[:, queries])
            else:
                grad_k[:, keys] += torch.bmm(grad_logits.transpose(1, 2), q[:, queries])
                grad_v[:, keys] += torch.bmm(weights.transpose(1, 2), grad[:, queries])
            if grad_bias is not None:
                grad_bias[queries, keys] += grad_logits.sum(0)
        grad_q = grad_q_parts[0] if len(grad_q_parts) == 1 else torch.cat(grad_q_parts, dim=1)
        return grad_q.mul_(ctx.scale), grad_k.mul_(ctx.scale), grad_lin_q, grad_lin_k, grad_v, grad_bias


def group_attention(q: Tensor, k: Tensor, lin_q: Tensor, lin_k: Tensor, v: Tensor, bias: Optional[Tensor],
                    groups: int, scale: float, attention_fn: str) -> Tensor:
    """The module docstring's formula; attention_fn is "relu_squared" or "laplace"."""
    return GroupAttentionFunction.apply(q, k, lin_q, lin_k, v, bias, groups, scale, attention_fn == "relu_squared")
