"""Checks around fairseq-eval-lm for scripts/wikitext/evaluate.sh.

    python -m delight_plugin.recipes.eval_lm_checks window CHECKPOINT TOKENS_PER_SAMPLE
        exit 1, saying why, when the checkpoint's model cannot take TOKENS_PER_SAMPLE tokens
    python -m delight_plugin.recipes.eval_lm_checks tokens DATA SUBSET
        print the number of tokens in the binarised split (what fairseq-eval-lm should evaluate)

fairseq-eval-lm drops, without an error, every sample longer than the model's max_positions() and
then reports 'Perplexity: 1.00' over nothing; the first check refuses that before it runs, the
second lets the script verify that the whole split was scored.
"""
import sys

from ..checkpoint_files import read_checkpoint, window_error


def split_tokens(data: str, subset: str) -> int:
    from fairseq.data import data_utils
    dataset = data_utils.load_indexed_dataset(f"{data}/{subset}", None)
    if dataset is None:
        raise SystemExit(f"error: {data} has no binarised {subset} split")
    return int(dataset.sizes.sum())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "window":
        problem = window_error(read_checkpoint(argv[1]), int(argv[2]), argv[1])
        if problem:
            raise SystemExit(f"error: {problem}")
    elif len(argv) == 3 and argv[0] == "tokens":
        print(split_tokens(argv[1], argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
