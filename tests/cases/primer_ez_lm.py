# Kernel 4 so that the decoding cache holds 3 rows; 4 heads of 8 so that the variants differ.
TINY = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-layers", "2",
        "--decoder-attention-heads", "4", "--primer-conv-kernel-size", "4"]
VARIANTS = {
    "per-head-dim": ["--primer-conv-variant", "per-head-dim"],
    "shared": ["--primer-conv-variant", "shared"],
    "kernel1-rotary": ["--primer-conv-kernel-size", "1", "--position-scheme", "rotary"],
}
BAD = [
    (["--primer-conv-variant", "per-group"], "--primer-conv-variant"),
    (["--primer-conv-kernel-size", "0"], "--primer-conv-kernel-size"),
    (["--decoder-attention-heads", "5"], "--decoder-attention-heads"),
    (["--decoder-ffn-embed-dim", "-5"], "--decoder-ffn-embed-dim"),
    # taps further back than the 64-token sample only ever see the causal padding
    (["--primer-conv-kernel-size", "1000"], "--tokens-per-sample (64)"),
]
