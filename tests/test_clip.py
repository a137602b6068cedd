"""CLIP building blocks against independent references: the loss against a brute-force symmetric cross-entropy
and transformers' own CLIP loss, the ranking against a sort, zero-shot against a hand computation, the towers
against the folders they come from, the compositional split against its definition, bad rows (skipped, counted,
named) and the retrieval picture's choice of images against a brute-force ranking."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertForPreTraining,
    CLIPVisionConfig,
    CLIPVisionModel,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTModel,
)
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from hfssl.errors import UserError
from hfssl.methods.clip import (
    INIT_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    CLIPArgs,
    CLIPPretrainer,
    build_dual_encoder,
    clip_loss,
)
from hfssl.methods.clip_eval import (
    RetrievalPictures,
    query_rows,
    retrieval_metrics,
    top_k_images,
    true_ranks,
    zero_shot_accuracy,
    zero_shot_classifier,
)
from hfssl.multimodal.pairs import PairDataArgs, load_pairs, read_pairs, write_skipped
from hfssl.multimodal.shapes import COLOURS, SHAPES, held_out_pairs, make_shapes
from hfssl.multimodal.vocab import caption_tokenizer


def brute_force_symmetric_ce(images, texts, scale):
    """Mean over pairs of -log softmax of the true partner, image->text and text->image, by loops."""
    images = images / images.norm(dim=-1, keepdim=True)
    texts = texts / texts.norm(dim=-1, keepdim=True)
    n, total = len(images), 0.0
    for i in range(n):
        row = [scale * float(images[i] @ texts[j]) for j in range(n)]
        col = [scale * float(texts[i] @ images[j]) for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(x) for x in row)))
        total += -(col[i] - math.log(sum(math.exp(x) for x in col)))
    return total / (2 * n)


def test_clip_loss_equals_brute_force_and_transformers_clip_loss():
    g = torch.Generator().manual_seed(0)
    images, texts = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    logit_scale = torch.tensor(math.log(7.0), dtype=torch.float64)
    loss, accuracy = clip_loss(images, texts, logit_scale)
    assert float(loss) == pytest.approx(brute_force_symmetric_ce(images, texts, 7.0), rel=1e-10)
    ni, nt = images / images.norm(dim=-1, keepdim=True), texts / texts.norm(dim=-1, keepdim=True)
    logits_per_text = 7.0 * nt @ ni.T
    assert float(loss) == pytest.approx(float(image_text_contrastive_loss(logits_per_text)), rel=1e-10)
    assert float(accuracy) == float(((ni @ nt.T).argmax(1) == torch.arange(6)).double().mean())
    # the scale is clamped at 100: log(1000) scores like log(100)
    high, _ = clip_loss(images, texts, torch.tensor(math.log(1000.0), dtype=torch.float64))
    assert float(high) == pytest.approx(brute_force_symmetric_ce(images, texts, 100.0), rel=1e-10)


def tiny_dual_encoder(**lock):
    args = CLIPArgs(vision_preset="tiny", text_preset="tiny", projection_dim=8, patch_size=4, **lock)
    model, new = build_dual_encoder(args, image_size=8, vocab_size=30, pad_id=0)
    return CLIPPretrainer(model, args.lock_image_tower, args.lock_text_tower), new


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30, (n, 6), generator=g)
    return {"pixel_values": torch.randn(n, 3, 8, 8, generator=g), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def test_pretrainer_loss_equals_the_dual_encoders_own_loss_with_one_process():
    torch.manual_seed(0)
    model, new = tiny_dual_encoder()
    model.eval()
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= set(new)
    assert model.model.logit_scale.item() == pytest.approx(INIT_LOGIT_SCALE, abs=1e-6)
    b = batch()
    ours = model(**b).loss
    theirs = model.model(**b, return_loss=True).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_logit_scale_is_clamped_after_each_step():
    model, _ = tiny_dual_encoder()
    with torch.no_grad():
        model.model.logit_scale.fill_(6.0)
    model.step_end()
    assert float(model.model.logit_scale) == pytest.approx(MAX_LOGIT_SCALE)


def test_locked_image_tower_is_frozen_and_stays_in_eval_mode():
    torch.manual_seed(0)
    model, _ = tiny_dual_encoder(lock_image_tower=True)
    model.train()
    assert not model.model.vision_model.training and model.model.text_model.training
    assert not any(p.requires_grad for p in model.model.vision_model.parameters())
    before_v = {k: v.clone() for k, v in model.model.vision_model.state_dict().items()}
    before_t = model.model.text_model.embeddings.word_embeddings.weight.clone()
    before_p = model.model.visual_projection.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(**batch()).loss.backward()
    opt.step()
    assert all(torch.equal(before_v[k], v) for k, v in model.model.vision_model.state_dict().items())
    assert not torch.equal(before_t, model.model.text_model.embeddings.word_embeddings.weight)
    assert not torch.equal(before_p, model.model.visual_projection.weight)  # LiT: the projection still learns


def test_retrieval_metrics_equal_a_brute_force_ranking():
    g = torch.Generator().manual_seed(1)
    images, texts = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)
    texts[:10] = images[:10] + 0.1 * texts[:10]  # some easy pairs
    got = retrieval_metrics(images, texts)
    ni, nt = images / images.norm(dim=1, keepdim=True), texts / texts.norm(dim=1, keepdim=True)
    sim = (ni @ nt.T).tolist()
    for name, matrix in (("i2t", sim), ("t2i", [list(c) for c in zip(*sim)])):
        ranks = [sorted(range(40), key=lambda j, row=row: -row[j]).index(i) + 1 for i, row in enumerate(matrix)]
        for k in (1, 5, 10):
            assert got[f"{name}_recall@{k}"] == pytest.approx(sum(r <= k for r in ranks) / 40)
        assert got[f"{name}_median_rank"] == float(torch.tensor(ranks, dtype=torch.float).median())
    assert true_ranks(torch.tensor([[0.9, 0.5], [0.8, 0.1]])).tolist() == [1, 2]


def test_zero_shot_averages_templates_as_computed_by_hand():
    # 2 classes x 2 templates in 2-D; class 0 averages (1,0) and (0,1) -> (1,1)/sqrt2; class 1 is (-1,0) twice
    texts = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[-3.0, 0.0], [-1.0, 0.0]]])
    classes = zero_shot_classifier(texts)
    assert torch.allclose(classes, torch.tensor([[2 ** -0.5, 2 ** -0.5], [-1.0, 0.0]]))
    images = torch.tensor([[0.2, 1.0], [-1.0, 0.3], [1.0, -0.5]])  # cosines: (0.83, -0.2), (-0.5, 0.96), (0.32, -0.89)
    assert zero_shot_accuracy(images, classes, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_shapes_split_holds_out_whole_colour_shape_combinations():
    hidden = held_out_pairs(3)
    assert len(hidden) == len(COLOURS) and {c for c, _ in hidden} == set(COLOURS) and {s for _, s in hidden} == set(SHAPES)
    train, held = make_shapes(300, seed=3, held_out=False), make_shapes(100, seed=3, held_out=True)

    def pairs_of(caption):  # "a small red circle above a large blue square"
        words = caption.replace("left of", "left_of").replace("right of", "right_of").split()
        return {(words[2], words[3]), (words[7], words[8])}

    assert all(not (pairs_of(c) & hidden) for c in train["caption"])
    assert all(pairs_of(c) & hidden for c in held["caption"])
    seen = set().union(*(pairs_of(c) for c in train["caption"]))
    assert {c for c, _ in seen} == set(COLOURS) and {s for _, s in seen} == set(SHAPES)
    again = make_shapes(300, seed=3, held_out=False)
    assert again["pixel_values"] == train["pixel_values"] and again["caption"] == train["caption"]
    assert make_shapes(5, seed=4, held_out=False)["caption"] != train["caption"][:5]
    # the first object's shape is the label, and the picture has the first object's colour in it
    row = train[0]
    assert SHAPES[row["label"]] == row["caption"].split()[3]
    pixels = np.frombuffer(row["pixel_values"], np.uint8).reshape(3, 32, 32).transpose(1, 2, 0).reshape(-1, 3)
    colour = np.array(COLOURS[row["caption"].split()[2]])
    assert (np.abs(pixels.astype(int) - colour).sum(1) < 10).any()


def test_caption_tokenizer_is_deterministic_and_spells_unseen_words():
    captions = ["a small red circle above a large blue square", "a large red star below a small green circle"]
    first, second = caption_tokenizer(captions), caption_tokenizer(list(reversed(captions)))
    assert first.get_vocab() == second.get_vocab()
    tokens = first.convert_ids_to_tokens(first("a red circle")["input_ids"])
    assert tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert "[UNK]" not in first.convert_ids_to_tokens(first("cellar")["input_ids"])  # spelled from seen letters


def save_towers(tmp_path):
    """hfssl-like exports: a ViT without pooler (mae.py / contrastive.py), a BERT for pretraining + tokenizer."""
    vit = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             image_size=8, patch_size=4), add_pooling_layer=False)
    vit.save_pretrained(tmp_path / "vit")
    tokenizer = caption_tokenizer(["a red circle", "a blue square"])
    bert = BertForPreTraining(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=16))
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    return vit, bert


def test_towers_from_folders_keep_their_weights_and_unsupported_folders_are_refused(tmp_path):
    vit, bert = save_towers(tmp_path)
    args = CLIPArgs(vision_model_name_or_path=str(tmp_path / "vit"), text_model_name_or_path=str(tmp_path / "bert"),
                    projection_dim=8)
    model, new = build_dual_encoder(args, image_size=8, vocab_size=0, pad_id=0)
    for key, value in vit.state_dict().items():
        assert torch.equal(model.vision_model.state_dict()[key], value), key
    for key, value in bert.bert.state_dict().items():
        assert torch.equal(model.text_model.state_dict()[key], value), key
    assert "vision_model.pooler.dense.weight" in new  # hfssl's ViT exports have no pooler: initialised, listed
    ResNetModel(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)).save_pretrained(tmp_path / "resnet")
    with pytest.raises(UserError, match="--vision_model_name_or_path .*resnet.* hidden_size"):
        build_dual_encoder(CLIPArgs(vision_model_name_or_path=str(tmp_path / "resnet")), 8, 30, 0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                     image_size=8, patch_size=4)).save_pretrained(tmp_path / "clipv")
    model, _ = build_dual_encoder(CLIPArgs(vision_model_name_or_path=str(tmp_path / "clipv"), projection_dim=8), 8, 30, 0)
    out = model(pixel_values=torch.randn(2, 3, 8, 8), input_ids=torch.randint(5, 30, (2, 4)))
    assert out.logits_per_image.shape == (2, 2)


def write_image(path, colour):
    Image.new("RGB", (10, 12), colour).save(path)


def test_captions_file_pairs_and_bad_rows_skipped_counted_and_named(tmp_path):
    write_image(tmp_path / "a.png", (255, 0, 0))
    write_image(tmp_path / "b.png", (0, 0, 255))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 10)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"image": "a.png", "caption": "a red thing"}) + "\n"
                                             + json.dumps({"image": "b.png", "caption": "a blue thing"}) + "\n")
    data, skipped = read_pairs(str(tmp_path), PairDataArgs(), 8, "--data")
    assert data["caption"] == ["a red thing", "a blue thing"] and skipped == []
    first = np.frombuffer(data[0]["pixel_values"], np.uint8).reshape(3, 8, 8)
    assert first[0].min() == 255 and first[2].max() == 0
    # every kind of bad row is skipped and named by file:line; the good rows are kept, in order
    (tmp_path / "bad.csv").write_text("image,caption\na.png,fine\nmissing.png,gone\nb.png,  \n,no image\n"
                                      "broken.png,broken\nb.png,also fine\n")
    data, skipped = read_pairs(str(tmp_path / "bad.csv"), PairDataArgs(), 8, "--data")
    assert data["caption"] == ["fine", "also fine"]
    bad = str(tmp_path / "bad.csv")
    assert [w for w, _ in skipped] == [f"{bad}:3", f"{bad}:4", f"{bad}:5", f"{bad}:6"]
    whys = [y for _, y in skipped]
    assert "missing.png does not exist" in whys[0] and whys[1] == "empty caption" and whys[2] == "no image named"
    assert whys[3].startswith("image broken.png cannot be decoded")
    (tmp_path / "rows.jsonl").write_text('{"image": "a.png", "caption": "red"}\n{"image": "a.png"}\n'
                                         '{"image": "b.png", "caption": 7}\n{"caption": "no image"}\n')
    data, skipped = read_pairs(str(tmp_path / "rows.jsonl"), PairDataArgs(), 8, "--data")
    assert data["caption"] == ["red"]
    assert skipped == [(f"{tmp_path / 'rows.jsonl'}:2", "no 'caption'"),
                       (f"{tmp_path / 'rows.jsonl'}:3", "the caption is a int, not text"),
                       (f"{tmp_path / 'rows.jsonl'}:4", "no image named")]
    # nothing usable left: an error naming the file; a column no row has: an error naming the flag
    (tmp_path / "none.csv").write_text("image,caption\nmissing.png,gone\na.png,\n")
    with pytest.raises(UserError, match=r"none.csv holds no usable pairs: all 2 rows were skipped"):
        read_pairs(str(tmp_path / "none.csv"), PairDataArgs(), 8, "--data")
    (tmp_path / "text.csv").write_text("image,text\na.png,red\n")
    with pytest.raises(UserError, match=r"text.csv: no column 'caption' .* set --caption_column"):
        read_pairs(str(tmp_path / "text.csv"), PairDataArgs(), 8, "--data")
    pairs = load_pairs(PairDataArgs(data=str(tmp_path / "bad.csv"), eval_data=str(tmp_path / "rows.jsonl")), 0, 8)
    assert len(pairs.skipped) == 7 and "7 rows skipped" in pairs.description and f"{bad}:3" in pairs.description
    out = write_skipped(pairs.skipped, tmp_path / "run" / "skipped_pairs.tsv")
    assert out.read_text().splitlines()[1:] == [f"{w}\t{y}" for w, y in pairs.skipped]


def brute_force_top_k(images, queries, k):
    sim = [[float(q @ i / (q.norm() * i.norm())) for i in images.double()] for q in queries.double()]
    return [sorted(range(len(images)), key=lambda j, row=row: (-row[j], j))[:k] for row in sim]


def test_retrieval_picture_shows_the_brute_force_top_k_and_is_written(tmp_path):
    g = torch.Generator().manual_seed(2)
    images, texts = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    texts[:10] = images[:10] + 0.3 * texts[:10]
    assert top_k_images(images, texts[[0, 5, 17]], 4).tolist() == brute_force_top_k(images, texts[[0, 5, 17]], 4)
    twice = torch.cat([images[:3], images[:3]])  # equal scores: the lower index first
    assert top_k_images(twice, images[:1], 2).tolist() == [[0, 3]]
    captions = [f"caption {i % 25}" for i in range(30)]  # rows 25..29 repeat the captions of rows 0..4
    assert query_rows(captions, 4) == [0, 8, 16, 24] and query_rows(["a", "a", "b"], 5) == [0, 2]

    class Main:
        is_main_process, trackers = True, []

    pixels = [np.full((3, 8, 8), i, np.uint8).tobytes() for i in range(30)]
    pictures = RetrievalPictures(Main(), pixels, captions, tmp_path, queries=3, k=5)
    path = pictures(images, texts, step=7)
    assert path == tmp_path / "retrievals" / "step-7.png"
    with Image.open(path) as picture:
        assert picture.size[0] > 5 * 64 and picture.size[1] > 3 * 64  # 3 rows of 5 cells of at least 64 px
    Main.is_main_process = False
    assert pictures(images, texts, step=8) is None and not (tmp_path / "retrievals" / "step-8.png").exists()


def test_fashion_mnist_pairs_are_captioned_by_prompts_of_their_label():
    from hfssl.multimodal.pairs import FASHION_PROMPT_NAMES, load_pairs

    templates = ["a photo of a {}.", "a {}."]
    pairs = load_pairs(PairDataArgs(data="fashion_mnist", zero_shot_templates=templates), seed=0, image_size=32)
    assert not pairs.retrieval and pairs.label_names == FASHION_PROMPT_NAMES
    rows = pairs.train.select(range(200))
    used = set()
    for caption, label in zip(rows["caption"], rows["label"]):
        options = [t.format(FASHION_PROMPT_NAMES[label]) for t in templates]
        assert caption in options
        used.add(options.index(caption))
    assert used == {0, 1}


@pytest.mark.slow  # two real processes (torchrun, gloo)
def test_two_processes_loss_and_gradients_equal_one_process_over_the_concatenated_batch(tmp_path):
    """Each process scores its 3 pairs against the 6 captions / images of both: the mean of the two processes'
    losses is the one-process loss over all 6 pairs, and the mean of their parameter gradients (what DDP's
    all-reduce gives every process) is the one-process gradient."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from clip_dist_check import model_and_batch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), str(root / "tests" / "clip_dist_check.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world"] for r in ranks] == [(0, 2), (1, 2)]
    model, batch = model_and_batch(2)
    full = model(**batch).loss
    full.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach(), rtol=1e-5, atol=1e-6)
    assert float(ranks[0]["loss"]) != pytest.approx(float(ranks[1]["loss"]))  # each process has its own rows
    reference = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert ranks[0]["grads"].keys() == ranks[1]["grads"].keys() == reference.keys()
    assert "model.logit_scale" in reference and "model.visual_projection.weight" in reference

    def close(a, b):  # float32 sums over 3 or 6 rows differ in the last bits: tolerance relative to the tensor
        return torch.allclose(a, b, rtol=1e-3, atol=max(1e-3 * float(b.abs().max()), 1e-6))  # (k_proj.bias: ~0)

    for name, grad in reference.items():
        assert close((ranks[0]["grads"][name] + ranks[1]["grads"][name]) / 2, grad), name
    # the check has teeth: each process's loss over its own 3 pairs only (no global batch) gives other gradients
    model.zero_grad()
    for rows in (slice(0, 3), slice(3, 6)):
        (model(**{k: v[rows] for k, v in batch.items()}).loss / 2).backward()
    assert not all(close(p.grad, reference[name]) for name, p in model.named_parameters() if p.grad is not None)
