TINY = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-layers", "2",
        "--decoder-attention-heads", "4"]
VARIANTS = {
    "rotary": ["--position-scheme", "rotary"],
    "learned": ["--position-scheme", "learned"],
    "adaptive": ["--adaptive-input", "--adaptive-input-cutoff", "20,50", "--adaptive-softmax-cutoff", "20,50",
                 "--tie-adaptive-weights", "--decoder-input-dim", "32", "--criterion", "adaptive_loss"],
    "tied-gelu": ["--share-decoder-input-output-embed", "--activation-fn", "gelu"],
}
BAD = [
    # an adaptive softmax under the default cross_entropy fails in the backward pass
    (["--adaptive-softmax-cutoff", "20,50"], "--criterion adaptive_loss"),
    (["--decoder-attention-heads", "5"], "--decoder-attention-heads"),
    (["--position-scheme", "alibi"], "--position-scheme"),
    (["--dropout", "1.5"], "--dropout"),
    (["--tie-adaptive-weights"], "--tie-adaptive-weights"),
    (["--decoder-ffn-embed-dim", "0"], "--decoder-ffn-embed-dim"),
    (["--decoder-ffn-embed-dim", "-5"], "--decoder-ffn-embed-dim"),
    (["--decoder-output-dim", "-1"], "--decoder-output-dim"),
    (["--decoder-input-dim", "0"], "--decoder-input-dim"),
    (["--share-decoder-input-output-embed", "--decoder-input-dim", "16", "--decoder-output-dim", "24"],
     "--decoder-input-dim (16) and --decoder-output-dim (24) must be equal"),
    (["--print-stats", "--stats-seq-len", "0"], "--stats-seq-len"),
    (["--adaptive-softmax-cutoff", "20,500", "--criterion", "adaptive_loss"], "vocabulary of 100 symbols"),
    (["--adaptive-softmax-cutoff", "50,20", "--criterion", "adaptive_loss"], "increasing"),
    (["--adaptive-input", "--criterion", "adaptive_loss"], "--adaptive-input-cutoff"),
]
