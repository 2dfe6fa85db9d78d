# Groups of 8 so that the 37-token probes cross four group boundaries and end mid-group.
TINY = ["--decoder-embed-dim", "32", "--decoder-layers", "2", "--gau-qk-dim", "16", "--gau-group-size", "8"]
VARIANTS = {
    "laplace": ["--gau-attention-fn", "laplace"],
    "bias-shift-sinusoidal": ["--gau-relative-bias", "--gau-token-shift", "--position-scheme", "sinusoidal"],
    "chunked": ["--gau-mode", "chunked"],
    "chunked-laplace": ["--gau-mode", "chunked", "--gau-attention-fn", "laplace"],
    "chunked-bias-shift": ["--gau-mode", "chunked", "--gau-relative-bias", "--gau-token-shift"],
    "chunked-group5-learned": ["--gau-mode", "chunked", "--gau-group-size", "5", "--position-scheme", "learned"],
}
BAD = [
    (["--gau-mode", "linear"], "--gau-mode"),
    (["--gau-group-size", "0"], "--gau-group-size"),
    (["--gau-qk-dim", "15"], "--gau-qk-dim"),
    (["--gau-expansion-factor", "0"], "--gau-expansion-factor"),
    (["--gau-quad-scale-length", "0"], "--gau-quad-scale-length"),
    (["--gau-attention-fn", "softmax"], "--gau-attention-fn"),
]
