"""Tests for hfssl.hub: Auto*-loadable export, model card, atomic saving, push to a fake Hub."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForPreTraining,
    BertTokenizer,
    HfArgumentParser,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from hfssl import hub
from hfssl.card import ModelCardInfo, write_model_card
from hfssl.hub import HubArgs, push_folder, save_model_folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_hub import FakeHub  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "##s", "a"]
TOKEN = "hf_TestTokenDoNotLeak0123456789"


@pytest.fixture(autouse=True)
def no_ambient_token(monkeypatch, tmp_path_factory):
    """No HF_TOKEN / stored login / offline flag from the machine running the tests."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path_factory.mktemp("hf") / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def tiny_bert(seed: int = 0) -> BertForPreTraining:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )
    return BertForPreTraining(config).eval()


def tiny_tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, model_max_length=32)


def card_info(**overrides) -> ModelCardInfo:
    fields = dict(
        model_name="me/bert-tiny", method="bert-mlm-nsp", base_model_type="bert", tags=["fill-mask"],
        datasets_description="a toy corpus of 12 sentences",
        hyperparameters={"learning_rate": 1e-4, "batch_size": 8, "optim": {"betas": "(0.9, 0.999)"}},
        metrics={"mlm_accuracy": 0.123456, "nsp_accuracy": 0.5}, pipeline_tag="fill-mask",
    )
    fields.update(overrides)
    return ModelCardInfo(**fields)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------- HubArgs


def test_hub_args_validation_and_repr():
    with pytest.raises(ValueError, match="hub_model_id"):
        HubArgs(push_to_hub=True)
    for bad in ("no-namespace", "a/b/c", "me/bad name"):
        with pytest.raises(ValueError, match="hub_model_id"):
            HubArgs(push_to_hub=True, hub_model_id=bad)
    args = HubArgs(push_to_hub=True, hub_model_id="me/bert-tiny", hub_token=TOKEN)
    assert TOKEN not in repr(args) and "hub_token" not in repr(args)
    (parsed,) = HfArgumentParser(HubArgs).parse_args_into_dataclasses(
        ["--push_to_hub", "--hub_model_id", "org/m", "--hub_private", "--hub_token", "t"]
    )
    assert (parsed.push_to_hub, parsed.hub_model_id, parsed.hub_private, parsed.hub_token) == (True, "org/m", True, "t")
    assert all(f.metadata.get("help") for f in HubArgs.__dataclass_fields__.values())


# ----------------------------------------------------------------------- saving and loading


def test_saved_folder_loads_with_auto_classes(tmp_path):
    model, tokenizer = tiny_bert(), tiny_tokenizer()
    out = save_model_folder(model, tmp_path / "out", tokenizer=tokenizer, card=card_info())
    assert out == tmp_path / "out"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left behind
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "tokenizer_config.json"} <= names
    assert not names & {"pytorch_model.bin", "model.bin"}

    reference = model.state_dict()
    on_disk = load_file(out / "model.safetensors")
    for key, tensor in on_disk.items():
        assert torch.equal(tensor, reference[key]), key

    expected_missing = {
        AutoModelForMaskedLM: set(),
        BertForPreTraining: set(),
        AutoModelForSequenceClassification: {"classifier.weight", "classifier.bias"},
        AutoModelForQuestionAnswering: {"qa_outputs.weight", "qa_outputs.bias"},
    }
    for cls, missing in expected_missing.items():
        loaded, info = cls.from_pretrained(out, output_loading_info=True)
        assert set(info["missing_keys"]) == missing, cls
        assert not info["mismatched_keys"], cls
        loaded_state = loaded.state_dict()
        shared = [k for k in loaded_state if k in reference]
        assert any(k.startswith("bert.encoder.") for k in shared), cls
        for key in shared:  # every pretrained tensor arrived unchanged
            assert torch.equal(loaded_state[key], reference[key]), (cls, key)
        assert len(shared) + len(missing) == len(loaded_state), cls
    classifier_keys = AutoModelForSequenceClassification.from_pretrained(out).state_dict().keys()
    assert "bert.pooler.dense.weight" in classifier_keys  # the pooler was pretrained (NSP), not new

    reloaded = AutoTokenizer.from_pretrained(out)
    pair = ("the cat sat", "a dogs on the mat")
    assert reloaded(*pair).input_ids == tokenizer(*pair).input_ids
    assert reloaded(*pair).token_type_ids == tokenizer(*pair).token_type_ids


def test_saves_image_processor(tmp_path):
    torch.manual_seed(0)
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    processor = ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.1, 0.2, 0.3])
    out = save_model_folder(ViTModel(config), tmp_path / "vit", processor=processor)
    assert (out / "preprocessor_config.json").is_file() and not (out / "README.md").exists()
    reloaded = AutoImageProcessor.from_pretrained(out)
    assert reloaded.size == {"height": 8, "width": 8} and list(reloaded.image_mean) == [0.1, 0.2, 0.3]
    _, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]


# --------------------------------------------------------------------------------- model card


def test_model_card_metadata_and_text(tmp_path):
    path = write_model_card(tmp_path, card_info(license="apache-2.0"))
    card = ModelCard.load(path)
    assert card.data.library_name == "transformers"
    assert card.data.tags == ["hfssl", "bert-mlm-nsp", "fill-mask"]
    assert card.data.pipeline_tag == "fill-mask" and card.data.license == "apache-2.0"
    assert "datasets" not in card.data.to_dict()  # no Hub dataset id known
    text = card.text
    assert "| learning_rate | 0.0001 |" in text and "| batch_size | 8 |" in text
    assert "| optim.betas | (0.9, 0.999) |" in text
    assert "| mlm_accuracy | 0.1235 |" in text and "a toy corpus of 12 sentences" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("me/bert-tiny"' in text

    path = write_model_card(tmp_path, card_info(
        method="mae", base_model_type="vit", tags=["vision"], pipeline_tag="image-feature-extraction",
        datasets=["uoft-cs/cifar10"], usage="from transformers import ViTModel\nViTModel.from_pretrained('x')",
    ))
    card = ModelCard.load(path)
    assert card.data.datasets == ["uoft-cs/cifar10"] and "license" not in card.data.to_dict()
    assert card.data.tags == ["hfssl", "mae", "vision"]
    assert "ViTModel.from_pretrained('x')" in card.text and "AutoModelForSequenceClassification" not in card.text


def test_tokens_are_scrubbed_from_card_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    explicit = "hf_ExplicitSecret987654321"
    hyper = {
        "learning_rate": 3e-4, "hub_token": "hf_whatever_value", "HubToken": None, "db_password": "pw",
        "note": TOKEN, "list": [1, TOKEN], "nested": {"client_secret": "abc", "warmup": 10, "key": explicit},
    }
    out = save_model_folder(tiny_bert(), tmp_path / "out", tokenizer=tiny_tokenizer(),
                            card=card_info(hyperparameters=hyper), secrets=[explicit])
    text = (out / "README.md").read_text()
    assert "| learning_rate | 0.0003 |" in text and "| nested.warmup | 10 |" in text
    assert "| list | [1] |" in text  # the token item dropped, the rest kept
    for leaked in ("hub_token", "HubToken", "db_password", "client_secret", "hf_whatever_value",
                   "| note |", "nested.key"):
        assert leaked not in text, leaked
    blob = all_bytes_under(tmp_path)
    assert TOKEN.encode() not in blob and explicit.encode() not in blob


def test_token_in_config_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    model = tiny_bert()
    model.config.some_field = TOKEN  # e.g. someone stored training args in the config
    with pytest.raises(ValueError, match="config.json contains a Hugging Face token"):
        save_model_folder(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ atomicity


def test_crash_mid_save_leaves_nothing(tmp_path, monkeypatch):
    seen = {}

    def crash(folder, card, **kwargs):
        seen["weights_written"] = (Path(folder) / "model.safetensors").is_file()
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(hub, "write_model_card", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model_folder(tiny_bert(), tmp_path / "out", tokenizer=tiny_tokenizer(), card=card_info())
    assert seen["weights_written"]  # the crash really happened mid-save
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp folder


def test_overwrite_refused_then_replaced(tmp_path, monkeypatch):
    out = tmp_path / "out"
    save_model_folder(tiny_bert(seed=0), out)
    (out / "stale.txt").write_text("from an older run")
    before = folder_bytes(out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model_folder(tiny_bert(seed=1), out)
    assert folder_bytes(out) == before

    # a crash while replacing keeps the old model intact
    monkeypatch.setattr(hub, "write_model_card", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        save_model_folder(tiny_bert(seed=1), out, card=card_info(), overwrite=True)
    assert folder_bytes(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]
    monkeypatch.undo()

    new_model = tiny_bert(seed=1)
    save_model_folder(new_model, out, overwrite=True)
    assert not (out / "stale.txt").exists()
    weights = load_file(out / "model.safetensors")
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(weights[key], new_model.state_dict()[key])
    assert not torch.equal(weights[key], tiny_bert(seed=0).state_dict()[key])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_existing_empty_folder_and_file_target(tmp_path):
    (tmp_path / "empty").mkdir()
    save_model_folder(tiny_bert(), tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError, match="afile"):
        save_model_folder(tiny_bert(), tmp_path / "afile", overwrite=True)


# ---------------------------------------------------------------------------------- push_to_hub


def test_failed_swap_restores_old_folder(tmp_path, monkeypatch):
    out = save_model_folder(tiny_bert(seed=0), tmp_path / "out")
    before = folder_bytes(out)
    real_rename = os.rename

    def flaky_rename(src, dst):
        if ".tmp-" in Path(src).name:  # moving the new folder into place fails
            raise OSError("rename failed (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="rename failed"):
        save_model_folder(tiny_bert(seed=1), out, overwrite=True)
    monkeypatch.undo()
    assert folder_bytes(out) == before and [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_model_folder(tiny_bert(), tmp_path / "out", tokenizer=tiny_tokenizer(), card=card_info())


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_push_uploads_exact_files(saved, tmp_path, monkeypatch, capfd, caplog, via):
    """Token by argument + endpoint by argument, or both from the environment (HF_TOKEN, HF_ENDPOINT)."""
    verbosity = huggingface_hub.utils.logging.get_verbosity()
    huggingface_hub.utils.logging.set_verbosity_debug()  # the client's debug logs must not show the token
    caplog.set_level(logging.DEBUG)
    try:
        with FakeHub(token=TOKEN) as fake:
            if via == "argument":
                kwargs = {"token": TOKEN, "endpoint": fake.endpoint}
            else:
                monkeypatch.setenv("HF_TOKEN", TOKEN)
                monkeypatch.setenv("HF_ENDPOINT", fake.endpoint + "/")
                kwargs = {}
            url = push_folder(saved, "me/bert-tiny", private=True, commit_message="first model", **kwargs)
    finally:
        huggingface_hub.utils.logging.set_verbosity(verbosity)
    assert url == f"{fake.endpoint}/me/bert-tiny"
    assert fake.unexpected == []
    assert fake.files["me/bert-tiny"] == folder_bytes(saved)  # exactly the folder's files, byte for byte
    assert fake.repos["me/bert-tiny"]["visibility"] == "private"
    assert [c["summary"] for c in fake.commits] == ["first model"]
    assert fake.requests and all(r["headers"]["authorization"] == f"Bearer {TOKEN}" for r in fake.requests)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err + caplog.text
    assert TOKEN.encode() not in all_bytes_under(tmp_path)


def test_push_without_token_fails_clearly(saved):
    before = folder_bytes(saved)
    with FakeHub() as fake:
        with pytest.raises(RuntimeError) as err:
            push_folder(saved, "me/bert-tiny", endpoint=fake.endpoint)
    message = str(err.value)
    assert f"saved locally at {saved}" in message and "no Hugging Face token" in message
    assert "HF_TOKEN" in message and "hf auth login" in message and f"hf upload me/bert-tiny {saved}" in message
    assert fake.requests == []  # nothing was sent
    assert folder_bytes(saved) == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_push_unreachable_or_rejected_fails_clearly(saved, capfd):
    before = folder_bytes(saved)
    with pytest.raises(RuntimeError, match="pushing to me/bert-tiny failed") as err:
        push_folder(saved, "me/bert-tiny", token=TOKEN, endpoint=f"http://127.0.0.1:{free_port()}")
    assert f"saved locally at {saved}" in str(err.value) and TOKEN not in str(err.value)

    with FakeHub(token="hf_the_right_token_000") as fake:  # the server rejects our token
        with pytest.raises(RuntimeError, match="pushing to me/bert-tiny failed") as err:
            push_folder(saved, "me/bert-tiny", token=TOKEN, endpoint=fake.endpoint)
    assert "hf upload me/bert-tiny" in str(err.value) and TOKEN not in str(err.value)
    assert fake.files == {}
    assert folder_bytes(saved) == before
    out, errs = capfd.readouterr()
    assert TOKEN not in out + errs


def test_push_in_offline_mode_fails_clearly(saved, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with FakeHub(token=TOKEN) as fake:
        with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE") as err:
            push_folder(saved, "me/bert-tiny", token=TOKEN, endpoint=fake.endpoint)
    assert f"saved locally at {saved}" in str(err.value) and fake.requests == []


def test_push_refuses_folder_containing_token(saved):
    (saved / "notes.txt").write_text(f"token={TOKEN}")
    with FakeHub(token=TOKEN) as fake:
        with pytest.raises(ValueError, match="notes.txt contains a Hugging Face token"):
            push_folder(saved, "me/bert-tiny", token=TOKEN, endpoint=fake.endpoint)
    assert fake.requests == []


def test_recipe_push_helper_exits_with_the_message(saved, monkeypatch):
    """What a recipe does after its local save: no push unless asked; a failed push exits, folder intact."""
    from hfssl.hub import push_if_requested

    assert push_if_requested(saved, HubArgs()) is None
    before = folder_bytes(saved)
    with FakeHub() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        with pytest.raises(SystemExit) as err:
            push_if_requested(saved, HubArgs(push_to_hub=True, hub_model_id="me/bert-tiny"))
    assert f"saved locally at {saved}" in str(err.value.code) and fake.requests == []
    assert folder_bytes(saved) == before
