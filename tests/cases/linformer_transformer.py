# 32 wide, 2 + 2 layers, 4 heads (d_head 8), k = 8 slots, chunks of 8. The in-process tests add
# SHORT_POSITIONS: 64 source / target positions (convolution blocks of 8 positions), so their 23-token
# targets cross two chunk boundaries and end inside a chunk, their 11-token sources end inside the
# second block; the recipe tests keep the task's 1,024 (real sentences are longer than 64 tokens).
from .linformer_lm import LINFORMER_BAD

TINY = ["--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-layers", "2",
        "--encoder-attention-heads", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-layers", "2", "--decoder-attention-heads", "4", "--linformer-k", "8", "--linformer-chunk-size", "8"]
SHORT_POSITIONS = ["--max-source-positions", "64", "--max-target-positions", "64"]
VARIANTS = {
    "learnable-layerwise": [],
    "learnable-none": ["--linformer-sharing", "none"],
    "learnable-headwise": ["--linformer-sharing", "headwise"],
    "learnable-kv": ["--linformer-sharing", "kv"],
    "convolution-layerwise": ["--linformer-method", "convolution"],
    "convolution-none-k-reduce": ["--linformer-method", "convolution", "--linformer-sharing", "none",
                                  "--linformer-k", "10", "--linformer-k-reduce-by-layer", "3"],
    "no-params-headwise": ["--linformer-method", "no-params", "--linformer-sharing", "headwise"],
    "cross-k-learnable": ["--linformer-cross-k", "4"],
    "cross-k-convolution-kv-reduce": ["--linformer-method", "convolution", "--linformer-sharing", "kv",
                                      "--linformer-cross-k", "6", "--linformer-k-reduce-by-layer", "2"],
    "cross-k-no-params-none": ["--linformer-method", "no-params", "--linformer-sharing", "none",
                               "--linformer-cross-k", "5"],
    "rotary-no-ffn-out-dim": ["--position-scheme", "rotary", "--linformer-no-ffn", "--linformer-out-proj-dim", "16"],
    "learned-positions-shared-embeddings": ["--position-scheme", "learned", "--share-all-embeddings"],
    "full-attention": ["--linformer-full-attention"],
    "adaptive-input-softmax-tied": ["--adaptive-input", "--adaptive-input-cutoff", "50", "--adaptive-softmax-cutoff", "50",
                                    "--tie-adaptive-weights", "--criterion", "adaptive_loss"],
    "checkpoint-c1-narrow-encoder": ["--linformer-checkpoint-level", "C1", "--encoder-embed-dim", "24",
                                     "--encoder-attention-heads", "2", "--linformer-cross-k", "4"],
}
BAD = LINFORMER_BAD + [
    (["--linformer-k", "65"], "--max-source-positions"),
    (["--linformer-k", "40", "--max-target-positions", "32"], "--max-target-positions"),
    (["--linformer-cross-k", "0"], "--linformer-cross-k"),
    (["--linformer-cross-k", "65"], "--max-source-positions"),
    (["--encoder-attention-heads", "5"], "--encoder-attention-heads"),
    (["--encoder-layers", "0"], "--encoder-layers"),
    (["--encoder-ffn-embed-dim", "0"], "--encoder-ffn-embed-dim"),
    (["--position-scheme", "rotary", "--encoder-embed-dim", "36"], "--position-scheme"),  # d_head 9
    (["--share-all-embeddings", "--encoder-embed-dim", "48"], "--share-all-embeddings"),
    (["--share-all-embeddings", "--adaptive-softmax-cutoff", "50", "--criterion", "adaptive_loss"], "--share-all-embeddings"),
    (["--dropout", "1.5"], "--dropout"),
    (["--activation-fn", "mish"], "--activation-fn"),
]
