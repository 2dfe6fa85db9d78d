"""``compute_macs_params``: parameters and MACs by the DeLighT reference's counting rules.

Rules (delight.md §3): a linear layer or GLT costs weight + bias elements per token (its params);
norms, activations, softmax, dropout and residual adds cost nothing (but norm weights are params);
attention costs 2*T*S*C (C = head width) plus its projections per token (cross-attention: k/v over
the S source tokens); look-ups cost nothing and their tables are "embedding" params; the output
layer costs V x d per token even when tied (then it has no params of its own). The encoder is
counted once at S source tokens. The decoder is summed over steps t = 1..T, each step costed as if
the whole prefix of length t were recomputed (self-attention at T = S = t), as the reference does.
"""
from dataclasses import dataclass
from typing import Iterable, List

from torch import nn

from ..modules.delight.block import DeLighTBlock


@dataclass
class Row:
    name: str
    params: int = 0       # non-embedding parameters
    emb_params: int = 0   # look-up tables
    macs: int = 0         # summed over all decoding steps


def count_params(*modules: nn.Module) -> int:
    unique = {id(p): p.numel() for m in modules if m is not None for p in m.parameters()}
    return sum(unique.values())


def per_token_macs(module: nn.Module) -> int:
    """Weights + biases of every linear layer / GLT inside ``module`` (norm parameters excluded)."""
    total = 0
    for m in module.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        elif type(m).__name__ == "GroupLinear":
            total += m.weight.numel() + m.bias.numel()
    return total


def block_macs(block: DeLighTBlock, tgt_len: int, src_len: int = 0) -> int:
    """One block processing ``tgt_len`` tokens (attending to ``src_len`` encoder tokens)."""
    attn = block.self_attn
    width = attn.dim
    macs = tgt_len * (per_token_macs(block.dextra) + per_token_macs(block.ffn) + per_token_macs(attn))
    macs += 2 * tgt_len * tgt_len * width
    cross = block.cross_attn
    if cross is not None:
        macs += tgt_len * (per_token_macs(cross.q_proj) + per_token_macs(cross.out_proj))
        macs += src_len * per_token_macs(cross.kv_proj) + 2 * tgt_len * src_len * cross.q_proj.out_features
    return macs


def embedding_row(name: str, lookup: nn.Module, transform: nn.Module, tokens: int) -> Row:
    """Look-up table (or adaptive input) + DExTra. Adaptive-input projections count as non-embedding."""
    tables = [m for m in lookup.modules() if isinstance(m, nn.Embedding)]
    table_params = count_params(*tables)
    proj = count_params(lookup) - table_params
    return Row(name, count_params(transform) + proj, table_params,
               tokens * (per_token_macs(transform) + per_token_macs(lookup)))


def output_row(name: str, decoder, tokens: int) -> Row:
    """Output layer: V x d MACs per token; its params only if not tied to the look-up table."""
    softmax = decoder.adaptive_softmax
    if softmax is not None:
        owned = {id(p) for p in decoder.embed_tokens.parameters()}
        params = sum(p.numel() for p in softmax.parameters() if id(p) not in owned)
        return Row(name, params, 0, tokens * count_params(softmax))
    weight = decoder.output_projection.weight
    tied = any(weight is p for p in decoder.embed_tokens.parameters())
    return Row(name, 0 if tied else weight.numel(), 0, tokens * weight.numel())


def decoder_rows(decoder, tgt_len: int, src_len: int = 0, shared_lookup: bool = False) -> List[Row]:
    """Rows of a DeLighT decoder (LM or translation) summed over steps t = 1..tgt_len."""
    rows = {}

    def add(row: Row, first_step: bool):
        acc = rows.setdefault(row.name, Row(row.name))
        acc.macs += row.macs
        if first_step:
            acc.params, acc.emb_params = row.params, row.emb_params

    for t in range(1, tgt_len + 1):
        emb = embedding_row("Dec_LUT", decoder.embed_tokens, decoder.input_transform, t)
        if shared_lookup:
            emb.emb_params = 0
        add(emb, t == 1)
        for i, layer in enumerate(decoder.layers):
            add(Row(f"Dec_Layer_{i}", count_params(layer), 0, block_macs(layer, t, src_len)), t == 1)
        if decoder.layer_norm is not None:
            add(Row("Dec_LN", count_params(decoder.layer_norm)), t == 1)
        if decoder.project_out_dim is not None:
            add(Row("Dec_Proj", count_params(decoder.project_out_dim), 0,
                    t * per_token_macs(decoder.project_out_dim)), t == 1)
        add(output_row("Dec_Out", decoder, t), t == 1)
    return list(rows.values())


def encoder_rows(encoder, src_len: int) -> List[Row]:
    rows = [embedding_row("Enc_LUT", encoder.embed_tokens, encoder.input_transform, src_len)]
    rows += [Row(f"Enc_Layer_{i}", count_params(layer), 0, block_macs(layer, src_len))
             for i, layer in enumerate(encoder.layers)]
    if encoder.layer_norm is not None:
        rows.append(Row("Enc_LN", count_params(encoder.layer_norm)))
    return rows


def transformer_rows(model, src_len: int, tgt_len: int) -> List[Row]:
    """fairseq's ``transformer`` under the same rules (for the comparison table)."""
    enc, dec = model.encoder, model.decoder

    def attn_macs(attn, t, s):
        qo = per_token_macs(attn.q_proj) + per_token_macs(attn.out_proj)
        kv = per_token_macs(attn.k_proj) + per_token_macs(attn.v_proj)
        return t * qo + s * kv + 2 * t * s * attn.embed_dim

    def ffn_macs(layer, t):
        return t * (per_token_macs(layer.fc1) + per_token_macs(layer.fc2))

    rows = [Row("Enc_LUT", 0, count_params(enc.embed_tokens), 0)]
    for i, layer in enumerate(enc.layers):
        rows.append(Row(f"Enc_Layer_{i}", count_params(layer), 0,
                        attn_macs(layer.self_attn, src_len, src_len) + ffn_macs(layer, src_len)))
    shared = dec.embed_tokens.weight is enc.embed_tokens.weight
    dec_rows = [Row("Dec_LUT", 0, 0 if shared else count_params(dec.embed_tokens), 0)]
    for i, layer in enumerate(dec.layers):
        macs = sum(attn_macs(layer.self_attn, t, t) + attn_macs(layer.encoder_attn, t, src_len) + ffn_macs(layer, t)
                   for t in range(1, tgt_len + 1))
        dec_rows.append(Row(f"Dec_Layer_{i}", count_params(layer), 0, macs))
    out = dec.output_projection.weight
    tied = out is dec.embed_tokens.weight
    dec_rows.append(Row("Dec_Out", 0 if tied else out.numel(), 0, out.numel() * tgt_len * (tgt_len + 1) // 2))
    for norm_owner, name in ((enc, "Enc_LN"), (dec, "Dec_LN")):
        if getattr(norm_owner, "layer_norm", None) is not None:
            dec_rows.append(Row(name, count_params(norm_owner.layer_norm)))
    return rows + dec_rows


def totals(rows: Iterable[Row]) -> Row:
    rows = list(rows)
    return Row("Total", sum(r.params for r in rows), sum(r.emb_params for r in rows), sum(r.macs for r in rows))


def format_table(rows: List[Row], title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'layer':<16}{'params':>14}{'emb params':>14}{'MACs':>18}")
    for r in rows + [totals(rows)]:
        lines.append(f"{r.name:<16}{r.params:>14,}{r.emb_params:>14,}{r.macs:>18,}")
    total = totals(rows)
    lines.append(f"total parameters {total.params + total.emb_params:,} "
                 f"({(total.params + total.emb_params) / 1e6:.2f}M), MACs {total.macs / 1e9:.3f}B")
    return "\n".join(lines)
