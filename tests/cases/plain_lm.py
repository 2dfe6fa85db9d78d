TINY = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-layers", "2",
        "--decoder-attention-heads", "4"]
VARIANTS = {
    "rotary": ["--position-scheme", "rotary"],
    "learned": ["--position-scheme", "learned"],
    "adaptive": ["--adaptive-input", "--adaptive-input-cutoff", "20,50", "--adaptive-softmax-cutoff", "20,50",
                 "--tie-adaptive-weights", "--decoder-input-dim", "32"],
    "tied-gelu": ["--share-decoder-input-output-embed", "--activation-fn", "gelu"],
}
BAD = [
    (["--decoder-attention-heads", "5"], "--decoder-attention-heads"),
    (["--position-scheme", "alibi"], "--position-scheme"),
    (["--dropout", "1.5"], "--dropout"),
    (["--tie-adaptive-weights"], "--tie-adaptive-weights"),
]
