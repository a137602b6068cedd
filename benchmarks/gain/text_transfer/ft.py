"""Fine-tuning harness: a plain user's AutoTokenizer + AutoModelForSequenceClassification + Trainer.

    python benchmarks/gain/text_transfer/ft.py --model runs/nsp0_10k/model --arm pre --tasks bbc_order bbc_next wordnet_swap \
        --lrs 1e-4 3e-4 1e-3 --seeds 0 1 2 --out results/ft.jsonl [--dropout 0.1] [--pooler keep|reinit|mean]
    python benchmarks/gain/text_transfer/ft.py --model runs/nsp0_10k/model --probe --out results/probe.jsonl

arm "pre": from_pretrained(model); arm "scratch": from_config(AutoConfig.from_pretrained(model)) (same
config, same tokenizer, random weights). --dropout X overrides hidden_dropout_prob and
attention_probs_dropout_prob at load time (default: whatever the exported config says). --pooler reinit
re-draws the pooler dense layer (normal(0, initializer_range), bias 0) before fine-tuning; --pooler mean
feeds the pooler the attention-masked mean of the last hidden states instead of the [CLS] state.
Every run appends one JSON line: validation and test accuracy at the end of training.
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)

ROOT = Path(__file__).resolve().parent
TASKS = Path(os.environ.get("HFSSL_TRANSFER_TASKS", "/tmp/hfssl_transfer_tasks"))


def load_rows(task, split):
    return [json.loads(x) for x in (TASKS / task / f"{split}.jsonl").read_text().splitlines()]


def encode(tok, rows, max_length):
    pair = "text_pair" in rows[0]
    enc = tok([r["text"] for r in rows], [r["text_pair"] for r in rows] if pair else None,
              truncation=True, max_length=max_length)
    enc = dict(enc)
    enc["labels"] = [int(r["label"]) for r in rows]
    return Dataset.from_dict(enc)


class MeanPooler(nn.Module):
    """Pooler that reads the masked mean of the token states (the mask is stashed by a pre-hook)."""

    def __init__(self, pooler):
        super().__init__()
        self.dense, self.activation, self.mask = pooler.dense, pooler.activation, None

    def forward(self, hidden_states):  # (B, T, H)
        m = self.mask[..., None].to(hidden_states.dtype)  # (B, T, 1)
        mean = (hidden_states * m).sum(1) / m.sum(1).clamp(min=1)
        return self.activation(self.dense(mean))


def build(model_dir, arm, num_labels, dropout, pooler):
    kw = dict(num_labels=num_labels)
    if dropout is not None:
        kw.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if arm == "pre":
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kw)
    else:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_dir, **kw))
    if pooler == "reinit":
        d = model.bert.pooler.dense
        with torch.no_grad():
            d.weight.normal_(0.0, model.config.initializer_range)
            d.bias.zero_()
    elif pooler == "mean":
        mp = MeanPooler(model.bert.pooler)
        model.bert.pooler = mp

        def hook(module, args, kwargs):
            mp.mask = kwargs.get("attention_mask")
            return None
        model.register_forward_pre_hook(hook, with_kwargs=True)
    return model


def accuracy(trainer, ds):
    pred = trainer.predict(ds)
    return float((pred.predictions.argmax(-1) == pred.label_ids).mean())


def finetune(a):
    tok = AutoTokenizer.from_pretrained(a.model)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task in a.tasks:
        rows = {s: load_rows(task, s) for s in ("train", "validation", "test")}
        maxlen = a.max_length or (128 if "text_pair" in rows["train"][0] else 64)
        ds = {s: encode(tok, r, maxlen) for s, r in rows.items()}
        for lr in a.lrs:
            for seed in a.seeds:
                set_seed(seed)  # before the model (head / random init) is built
                model = build(a.model, a.arm, 2, a.dropout, a.pooler)
                args = TrainingArguments(
                    output_dir="/tmp/ft_exp13", max_steps=a.steps,
                    per_device_train_batch_size=32, per_device_eval_batch_size=128, learning_rate=lr,
                    warmup_steps=a.warmup, weight_decay=0.01, lr_scheduler_type="linear", seed=seed,
                    save_strategy="no", eval_strategy="no", logging_steps=10_000, report_to="none",
                    disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
                trainer = Trainer(model=model, args=args, train_dataset=ds["train"],
                                  data_collator=DataCollatorWithPadding(tok))
                t0 = time.time()
                tr = trainer.train()
                rec = dict(model=a.model, tag=a.tag, arm=a.arm, dropout=a.dropout, pooler=a.pooler, task=task,
                           lr=lr, seed=seed, steps=a.steps, warmup=a.warmup, train_loss=round(tr.training_loss, 4),
                           val=accuracy(trainer, ds["validation"]), test=accuracy(trainer, ds["test"]),
                           sec=round(time.time() - t0, 1))
                for extra in sorted((TASKS / task).glob("test_*.jsonl")):  # extra test sets, e.g. test_unseen
                    rec[extra.stem] = accuracy(trainer, encode(tok, load_rows(task, extra.stem), maxlen))
                print(json.dumps(rec), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")


@torch.no_grad()
def features(model, tok, rows, maxlen):
    pair = "text_pair" in rows[0]
    cls, mean, pool = [], [], []
    for i in range(0, len(rows), 256):
        chunk = rows[i:i + 256]
        enc = tok([r["text"] for r in chunk], [r["text_pair"] for r in chunk] if pair else None,
                  truncation=True, max_length=maxlen, padding=True, return_tensors="pt")
        o = model(**enc)
        h, m = o.last_hidden_state, enc["attention_mask"][..., None].float()
        cls.append(h[:, 0])
        mean.append((h * m).sum(1) / m.sum(1))
        pool.append(o.pooler_output)
    return {k: torch.cat(v).numpy() for k, v in (("cls", cls), ("mean", mean), ("pooler", pool))}


def probe(a):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tok = AutoTokenizer.from_pretrained(a.model)
    encoders = {"pre": AutoModel.from_pretrained(a.model).eval()}
    set_seed(0)
    encoders["random"] = AutoModel.from_config(AutoConfig.from_pretrained(a.model)).eval()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task in a.tasks:
        rows = {s: load_rows(task, s) for s in ("train", "validation", "test")}
        maxlen = a.max_length or (128 if "text_pair" in rows["train"][0] else 64)
        y = {s: np.array([r["label"] for r in rows[s]]) for s in rows}
        for name, enc in encoders.items():
            feats = {s: features(enc, tok, rows[s], maxlen) for s in rows}
            for kind in ("cls", "pooler", "mean"):
                sc = StandardScaler().fit(feats["train"][kind])
                x = {s: sc.transform(feats[s][kind]) for s in rows}
                best = max((LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"]) for c in (0.01, 0.1, 1)),
                           key=lambda m: (m.predict(x["validation"]) == y["validation"]).mean())
                rec = dict(model=a.model, tag=a.tag, encoder=name, task=task, features=kind,
                           val=float((best.predict(x["validation"]) == y["validation"]).mean()),
                           test=float((best.predict(x["test"]) == y["test"]).mean()),
                           feat_std_across_examples=float(feats["test"][kind].std(0).mean()))
                print(json.dumps(rec), flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--arm", choices=["pre", "scratch"], default="pre")
    p.add_argument("--tasks", nargs="+", default=["bbc_order", "bbc_next", "wordnet_swap"])
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--max_length", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None)
    p.add_argument("--pooler", choices=["keep", "reinit", "mean"], default="keep")
    p.add_argument("--probe", action="store_true")
    p.add_argument("--tag", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    probe(a) if a.probe else finetune(a)


if __name__ == "__main__":
    main()
