# k = 8 slots over --tokens-per-sample 64 (conv blocks of 8 positions) and chunks of 8: the 37-token
# probes cross four chunk boundaries and end inside a chunk and inside a block.
TINY = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-layers", "2",
        "--decoder-attention-heads", "4", "--linformer-k", "8", "--linformer-chunk-size", "8"]
VARIANTS = {
    "learnable-none": ["--linformer-sharing", "none"],
    "learnable-headwise": ["--linformer-sharing", "headwise"],
    "learnable-kv": ["--linformer-sharing", "kv"],
    "convolution-layerwise": ["--linformer-method", "convolution"],
    "convolution-none-k-reduce": ["--linformer-method", "convolution", "--linformer-sharing", "none",
                                  "--linformer-k", "10", "--linformer-k-reduce-by-layer", "3"],
    "no-params-headwise": ["--linformer-method", "no-params", "--linformer-sharing", "headwise"],
    "k-reduce-kv-odd-chunk": ["--linformer-sharing", "kv", "--linformer-k-reduce-by-layer", "5",
                              "--linformer-chunk-size", "5"],
    "rotary-no-ffn-out-dim": ["--position-scheme", "rotary", "--linformer-no-ffn", "--linformer-out-proj-dim", "16"],
    "full-attention": ["--linformer-full-attention"],
    "checkpoint-c1-emb-dim": ["--linformer-checkpoint-level", "C1", "--decoder-input-dim", "24",
                              "--decoder-output-dim", "24"],
}
# The Linformer attention's own flags, refused alike by linformer_lm and linformer_transformer.
LINFORMER_BAD = [
    (["--linformer-k", "0"], "--linformer-k"),
    (["--linformer-method", "pooling"], "--linformer-method"),
    (["--linformer-sharing", "all"], "--linformer-sharing"),
    (["--linformer-k-reduce-by-layer", "2"], "--linformer-k-reduce-by-layer"),  # with layerwise sharing
    (["--linformer-k-reduce-by-layer", "-1", "--linformer-sharing", "kv"], "--linformer-k-reduce-by-layer"),
    (["--linformer-chunk-size", "0"], "--linformer-chunk-size"),
    (["--linformer-out-proj-dim", "0"], "--linformer-out-proj-dim"),
    (["--linformer-checkpoint-level", "C2"], "--linformer-checkpoint-level"),
    (["--decoder-attention-heads", "5"], "--decoder-attention-heads"),
]
BAD = LINFORMER_BAD + [
    (["--linformer-k", "65"], "--tokens-per-sample"),
]
