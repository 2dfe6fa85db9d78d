# Factor 3 (and 2 then 3 when nested) so the 37-token probes end inside a window at every level.
TINY = ["--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4",
        "--hourglass-structure", "1@1,1@3,1@1"]


def _methods(down, up):
    return ["--hourglass-downsampling", down, "--hourglass-upsampling", up]


# Every downsampling x upsampling pair (the default is avg-linear), both bases inside the attention
# methods, nested and asymmetric structures, and rotary positions scaled at the shortened levels.
VARIANTS = {
    "avg-repeat": _methods("avg", "repeat"),
    "avg-attention": _methods("avg", "attention"),
    "linear-repeat": _methods("linear", "repeat"),
    "linear-linear": _methods("linear", "linear"),
    "linear-attention": _methods("linear", "attention"),
    "attention-repeat": _methods("attention", "repeat"),
    "attention-linear": _methods("attention", "linear"),
    "attention-attention": _methods("attention", "attention"),
    "attention-bases-linear-repeat": _methods("attention", "attention") + [
        "--hourglass-attention-down-base", "linear", "--hourglass-attention-up-base", "repeat"],
    "factor4-rotary": ["--hourglass-structure", "1@1,2@4,1@1", "--position-scheme", "rotary"],
    "nested-rotary-attention": ["--hourglass-structure", "1@1,1@2,1@6,1@2,1@1", "--position-scheme", "rotary",
                                *_methods("attention", "attention")],
    "nested-asymmetric-linear": ["--hourglass-structure", "0@1,1@2,2@4,0@2,1@1", "--position-scheme", "learned",
                                 *_methods("linear", "linear")],
}
BAD = [
    (["--hourglass-structure", "2@1,2@3"], "--hourglass-structure"),
    (["--hourglass-structure", "1@1,2@3,1@2"], "palindrome"),
    (["--hourglass-structure", "1@1,1@2,1@3,1@2,1@1"], "must be a multiple"),
    (["--hourglass-structure", "1@2,2@4,1@2"], "--hourglass-structure"),
    (["--hourglass-structure", "1@1,0@3,1@1"], "--hourglass-structure"),
    (["--hourglass-structure", "1@1,2x3,1@1"], "--hourglass-structure"),
    (["--hourglass-downsampling", "max"], "--hourglass-downsampling"),
    (["--hourglass-upsampling", "conv"], "--hourglass-upsampling"),
    (["--hourglass-attention-down-base", "repeat"], "--hourglass-attention-down-base"),
    (["--decoder-attention-heads", "5"], "--decoder-attention-heads"),
    (["--decoder-ffn-embed-dim", "0"], "--decoder-ffn-embed-dim"),
    # shortened by at least the 64-token sample: the level holds one token, a summary of step 0
    (["--hourglass-structure", "1@1,1@128,1@1"], "--tokens-per-sample (64)"),
    (["--hourglass-structure", "1@1,1@2,1@64,1@2,1@1"], "--tokens-per-sample (64)"),
]
