# Tiny DeLighT LMs: d_m = 64 (map 32), 2 blocks of depth 2..3 with g_max 4 so that GLTs have
# 2-4 groups, shuffling and input mixing on the 37-token probes.
TINY = ["--delight-emb-map-dim", "32", "--delight-emb-out-dim", "64", "--delight-dec-layers", "2",
        "--delight-dec-min-depth", "2", "--delight-dec-max-depth", "3", "--delight-emb-depth", "3",
        "--delight-dec-max-groups", "4", "--delight-emb-max-groups", "4", "--dropout", "0.1"]
# wiki103's 20000,60000 cutoffs exceed the test dictionaries, and its adaptive softmax trains with
# adaptive_loss (which refuses PyTorch DDP). Variants apply to both archs, so the tied non-adaptive
# output is tested in tests/test_delight_lm.py.
ARCH_TINY = {"delight_transformer_lm_wiki103": ["--adaptive-input-cutoff", "20,50", "--adaptive-softmax-cutoff", "20,50",
                                                "--criterion", "adaptive_loss", "--ddp-backend", "legacy_ddp"]}
VARIANTS = {
    "paper-groups-odd-depth": ["--glt-paper-schedule", "--delight-dec-max-depth", "5"],
    "define-iclr": ["--define-iclr"],
    "no-shuffle-uniform": ["--no-glt-shuffle", "--delight-dec-scaling", "uniform", "--delight-dec-max-depth", "2"],
    "bn-gelu-learned": ["--norm-type", "bn", "--act-type", "gelu", "--position-scheme", "learned"],
    "rotary": ["--position-scheme", "rotary"],
    "adaptive-tied": ["--adaptive-input", "--adaptive-input-cutoff", "20,50", "--adaptive-softmax-cutoff", "20,50",
                      "--tie-adaptive-weights", "--tie-adaptive-proj", "--criterion", "adaptive_loss"],
}
BAD = [
    (["--adaptive-input", "--adaptive-input-cutoff", "20,50", "--adaptive-softmax-cutoff", "20,50",
      "--tie-adaptive-weights", "--criterion", "cross_entropy"], "--criterion adaptive_loss"),
    (["--delight-emb-out-dim", "48"], "--delight-emb-out-dim"),
    (["--delight-dec-min-depth", "4", "--delight-dec-max-depth", "3"], "--delight-dec-min-depth"),
    (["--delight-dec-ffn-red", "5"], "--delight-dec-ffn-red"),
    (["--delight-dec-max-groups", "128"], "--delight-dec-max-groups"),
    (["--delight-emb-max-groups", "3"], "--delight-emb-max-groups"),
    (["--delight-dec-scaling", "uniform"], "--delight-dec-scaling"),
    (["--norm-type", "rms"], "--norm-type"),
    (["--act-type", "mish"], "--act-type"),
    (["--pe-dropout", "1.0"], "--pe-dropout"),
    (["--delight-emb-depth", "1"], "--delight-emb-depth"),
    # skeleton checks name the --delight-* flag that sets the skeleton field
    (["--delight-emb-out-dim", "-64"], "--delight-emb-out-dim=-64"),
    (["--delight-dec-layers", "0"], "--delight-dec-layers=0"),
    (["--print-stats", "--tgt-len-ps", "0"], "--tgt-len-ps=0"),
    (["--adaptive-input", "--adaptive-input-cutoff", "20,500", "--adaptive-softmax-cutoff", "20,500",
      "--tie-adaptive-weights", "--criterion", "adaptive_loss"], "vocabulary of 100 symbols"),
]
