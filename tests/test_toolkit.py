"""The researcher's toolkit on real checkpoints: ``delight_plugin.load`` and fairseq's
``from_pretrained`` give a GeneratorHubInterface whose ``score`` equals the model's own
log-probabilities, ``sample`` decodes, ``translate`` works for the encoder-decoder, and
``--tensorboard-logdir`` writes event files with the training loss."""
from pathlib import Path

import pytest
import torch

import harness
from fairseq.hub_utils import GeneratorHubInterface
from fairseq.models import ARCH_MODEL_REGISTRY

from delight_plugin import hub
from delight_plugin.benchmark.tensorboard import logdir_scalars, plot_runs

TINY_LM = ["--arch", "plain_lm", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
           "--decoder-layers", "2", "--decoder-attention-heads", "4", "--tokens-per-sample", "64"]


def train(data, save_dir: Path, task_flags, *extra):
    proc = harness.fairseq_cli("train", data, "--user-dir", harness.PLUGIN_DIR, *task_flags, "--optimizer", "adam",
                        "--lr", "0.002", "--max-tokens", "512", "--max-update", "3", "--save-dir", save_dir,
                        "--no-epoch-checkpoints", "--num-workers", "0", "--disable-validation", "--seed", "1",
                        "--log-format", "json", "--log-interval", "1", *extra)
    (save_dir / "train.log").write_text(proc.stdout + proc.stderr)
    return save_dir


@pytest.fixture(scope="module")
def lm_run(lm_data_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("toolkit-lm")
    train(lm_data_bin, root, ["--task", "language_modeling", *TINY_LM], "--tensorboard-logdir", root / "tensorboard")
    return root


def test_tensorboard_logdir_writes_the_training_curves(lm_run, tmp_path):
    curves = logdir_scalars(lm_run / "tensorboard")
    assert set(curves) >= {"train_inner", "train"}
    losses = curves["train_inner"]["loss"]
    assert [step for step, _ in losses] == [1, 2, 3] and all(0 < loss < 20 for _, loss in losses), losses
    # the json log of the same run holds the same losses
    logged = harness.train_losses((lm_run / "train.log").read_text())
    assert [round(v, 2) for _, v in losses] == [round(logged[s], 2) for s in (1, 2, 3)]
    png = plot_runs({"plain_lm": lm_run / "tensorboard"}, tmp_path / "curves.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def expected_scores(model, dictionary, tokens):
    """What the model itself assigns to ``tokens`` after an end-of-sentence context."""
    context = torch.cat([torch.tensor([dictionary.eos()]), tokens[:-1]])
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(context[None]), log_probs=True)[0]
    return lprobs.gather(-1, tokens[:, None]).squeeze(-1)


def test_load_scores_and_samples_a_language_model(lm_run, lm_data_bin):
    lm = hub.load(lm_run)  # a directory: checkpoint_best/last.pt and the training data's dicts
    assert isinstance(lm, GeneratorHubInterface)
    scored = lm.score("the game was released in")
    # fairseq's LM scorer scores the sentence's words (the eos that encode() appends is dropped).
    assert scored["tokens"].tolist() == lm.encode("the game was released in").tolist()[:-1]
    torch.testing.assert_close(scored["positional_scores"],
                               expected_scores(lm.models[0], lm.task.source_dictionary, scored["tokens"]))
    sample = lm.sample("the game", beam=1, max_len_b=6)
    assert sample.startswith("the game") and len(sample.split()) > 2


def test_from_pretrained_matches_load(lm_run, lm_data_bin):
    model_cls = ARCH_MODEL_REGISTRY["plain_lm"]
    lm = model_cls.from_pretrained(str(lm_run), "checkpoint_last.pt", str(lm_data_bin))
    assert isinstance(lm, GeneratorHubInterface)
    direct = hub.load(lm_run / "checkpoint_last.pt", data_name_or_path=lm_data_bin)
    torch.testing.assert_close(lm.score("in the")["positional_scores"], direct.score("in the")["positional_scores"])


def test_load_refuses_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_best.pt"):
        hub.load(tmp_path)


@pytest.mark.slow
def test_load_translates_with_the_encoder_decoder(mt_data_bin, tmp_path):
    arch = "delight_transformer" if "delight_transformer" in ARCH_MODEL_REGISTRY else "transformer"
    flags = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
             "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
             "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]
    if arch == "delight_transformer":
        from test_delight_translation import TINY as flags  # the encoder-decoder's own tiny flags
    train(mt_data_bin, tmp_path, ["--task", "translation", "--source-lang", "en", "--target-lang", "ro", "--arch",
                                  arch, *flags])
    translator = hub.load(tmp_path, data_name_or_path=mt_data_bin)
    out = translator.translate("the european parliament", beam=2, max_len_b=8)
    assert isinstance(out, str) and 0 < len(out.split()) <= 8
    words = set(translator.tgt_dict.symbols)
    assert all(w in words for w in out.split())
