"""recipes/train_tokenizer.py run as a script: tiny corpus, embedded default corpus, refusals, config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "recipes/train_tokenizer.py"
CONFIG = ROOT / "recipes" / "configs" / "train_tokenizer.yaml"


@pytest.fixture(scope="module")
def recipe():
    """The recipe imported in-process, for the checks that need no training run."""
    spec = importlib.util.spec_from_file_location("train_tokenizer_recipe", ROOT / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write_corpus(folder):
    folder.mkdir()
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    lines = [" ".join(words[(i + j) % len(words)] for j in range(6)) + "." for i in range(60)]
    (folder / "a.txt").write_text("\n".join(lines[:30]) + "\n\nSecond paragraph here.\n")
    (folder / "b.txt").write_text("\n".join(lines[30:]) + "\n")


def test_tiny_corpus(tmp_path, run_script):
    write_corpus(tmp_path / "corpus")
    out = tmp_path / "tok"
    proc = run_script(SCRIPT, "--corpus", tmp_path / "corpus", "--output_dir", out, "--vocab_size", 60,
                      "--no_lowercase", "--model_max_length", 64, "--cache_dir", tmp_path / "cache")
    assert "corpus: 2 files" in proc.stdout and "2 documents" in proc.stdout
    assert f"to {out}" in proc.stdout
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert type(tokenizer).__name__ == "BertTokenizer" and len(tokenizer) == 60
    assert tokenizer.model_max_length == 64 and tokenizer.do_lower_case is False
    reference = BertTokenizerLegacy(vocab_file=str(out / "vocab.txt"), do_lower_case=False)
    text = "Alpha beta gamma, Omega!"
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]


def test_refuses_a_non_empty_output_dir(tmp_path, recipe):
    from hfssl.errors import UserError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="overwrite_output_dir"):
        recipe.main(["--corpus", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="nowhere"):  # with the flag it goes on, to the corpus
        recipe.main(["--corpus", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out"),
                     "--overwrite_output_dir"])
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"  # a failed run leaves the folder as it was


def test_overwrite_leaves_exactly_the_new_tokenizer(tmp_path, recipe):
    """--overwrite_output_dir over a folder holding another tokenizer, a stale vocab.txt and a stray file:
    afterwards the folder holds the new tokenizer only, and vocab.txt agrees with tokenizer.json."""
    import json

    from hfssl.text.tokenizer import save_tokenizer, train_wordpiece

    out = tmp_path / "tok"
    old = train_wordpiece(["zebra yak xylophone walrus vulture"] * 20, vocab_size=40, min_frequency=1,
                          show_progress=False)
    save_tokenizer(old, out)
    (out / "vocab.txt").write_text("[PAD]\nstale\ntokens\n")  # disagrees with the old tokenizer.json too
    (out / "old_notes.txt").write_text("from an earlier run")
    write_corpus(tmp_path / "corpus")
    recipe.main(["--corpus", str(tmp_path / "corpus"), "--output_dir", str(out), "--overwrite_output_dir",
                 "--vocab_size", "60", "--min_frequency", "1", "--cache_dir", str(tmp_path / "cache")])

    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    in_id_order = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == in_id_order
    assert len(in_id_order) == 60 and vocab != old.get_vocab() and "x" not in vocab  # x: only in the old text
    fresh = save_tokenizer(AutoTokenizer.from_pretrained(str(out)), tmp_path / "fresh")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())  # no old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "corpus", "fresh", "tok"]  # no temporary left
    assert AutoTokenizer.from_pretrained(str(out)).get_vocab() == vocab


def test_embedded_default_corpus_with_config(tmp_path, run_script):
    out = tmp_path / "tok"
    proc = run_script(SCRIPT, "--config", CONFIG, "--output_dir", out, "--vocab_size", 400,
                      "--cache_dir", tmp_path / "cache")
    assert "corpus: 6 files" in proc.stdout and "275 documents" in proc.stdout
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == 400 and tokenizer.model_max_length == 128 and tokenizer.do_lower_case
    encoded = tokenizer("Emma Woodhouse", "was handsome")
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"])[0] == "[CLS]"
    assert encoded["token_type_ids"][-1] == 1


def test_config_file_first_line_and_keys(recipe):
    assert CONFIG.read_text().splitlines()[0].startswith("# python recipes/train_tokenizer.py")
    from hfssl.config import parse
    from hfssl.text.corpus import CorpusArgs
    from hfssl.text.tokenizer import TokenizerArgs

    corpus, tok, out = parse(CorpusArgs, TokenizerArgs, recipe.OutputArgs, args=["--config", str(CONFIG)])
    assert corpus.corpus is None and tok.vocab_size == 8192 and tok.lowercase and out.output_dir == "runs/tokenizer"
