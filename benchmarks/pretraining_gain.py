"""Does pretraining help? hfssl BERT checkpoint vs the same architecture from scratch, fine-tuned alike.

    python benchmarks/pretraining_gain.py --work_dir /tmp/gain --seeds 0 1 2   # the recipe's defaults

1. Pretrain once with recipes/bert_mlm.py (flags after ``--pretrain_args``) on Austen + the BBC articles of
   the training/validation split (the BBC test articles are never seen), unless ``--pretrained DIR``.
2. For each task (BBC topics, 5 classes; WordNet noun-gloss categories, 26 classes, never seen in
   pretraining) and each init (pretrained, scratch): fine-tune with recipes/finetune_text_classification.py
   (the standard Trainer) at every learning rate of the grid and every seed; pick each init's learning rate
   by mean *validation* accuracy; report *test* accuracy at that rate: mean and spread over seeds, and the gain.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "recipes"))


def split_rows(rows: list[dict], sizes: tuple[int, int, int], seed: int) -> tuple[list, list, list]:
    """Stratified train / validation / test split of ``{"text", "label"}`` rows."""
    rng, by_label = random.Random(seed), defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    total = sum(sizes)
    out: tuple[list, list, list] = ([], [], [])
    for group in by_label.values():
        rng.shuffle(group)
        share = len(group) * min(1.0, total / len(rows))
        cut1, cut2 = round(share * sizes[0] / total), round(share * (sizes[0] + sizes[1]) / total)
        out[0].extend(group[:cut1])
        out[1].extend(group[cut1:cut2])
        out[2].extend(group[cut2:round(share)])
    for part in out:
        rng.shuffle(part)
    return out


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows))
    return path


def prepare_tasks(work: Path, data: Path) -> dict[str, dict[str, Path]]:
    """Write the task splits; returns {task: {"train", "validation", "test"}} plus the BBC pretraining text."""
    bbc = [json.loads(x) for x in (data / "text/bbc_news/bbc_news.jsonl").read_text().splitlines()]
    wordnet = [json.loads(x) for x in (data / "text/wordnet/noun_glosses.jsonl").read_text().splitlines()]
    tasks = {}
    for name, rows, sizes in (("bbc", bbc, (1000, 400, 825)), ("wordnet", wordnet, (3000, 1000, 2000))):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        train, val, test = split_rows(rows, sizes, seed=1234)
        tasks[name] = {"train": write_jsonl(train, folder / "train.jsonl"),
                       "validation": write_jsonl(val, folder / "validation.jsonl"),
                       "test": write_jsonl(test, folder / "test.jsonl")}
        if name == "bbc":  # unlabelled pretraining text: every BBC article except the test ones
            corpus = work / "pretrain_corpus"
            corpus.mkdir(exist_ok=True)
            write_jsonl(train + val, corpus / "bbc_train_val.jsonl")
            for novel in sorted((data / "text/austen").glob("*.txt")):
                (corpus / novel.name).write_text(novel.read_text(encoding="utf-8"), encoding="utf-8")
    return tasks


def pretrain(work: Path, extra: list[str]) -> Path:
    out = work / "pretrain"
    if (out / "model/model.safetensors").is_file():
        print(f"reusing {out / 'model'}")
        return out / "model"
    cmd = [sys.executable, str(ROOT / "recipes/bert_mlm.py"), "--corpus", str(work / "pretrain_corpus"),
           "--document_separator", r"^\s*(?:CHAPTER|Chapter)\s+(?:[IVXLC]+|\d+)\b", "--output_dir", str(out),
           "--overwrite_output_dir", *extra]
    print("pretraining:", shlex.join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"pretraining took {(time.perf_counter() - start) / 60:.1f} min")
    return out / "model"


@torch.no_grad()
def test_accuracy(folder: Path, test_file: Path, max_length: int) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows = [json.loads(x) for x in test_file.read_text().splitlines()]
    hits = 0
    for i in range(0, len(rows), 128):
        chunk = rows[i:i + 128]
        enc = tok([r["text"] for r in chunk], truncation=True, max_length=max_length, padding=True,
                  return_tensors="pt")
        pred = model(**enc).logits.argmax(-1).tolist()
        hits += sum(model.config.id2label[p] == str(r["label"]) for p, r in zip(pred, chunk))
    return hits / len(rows)


def finetune(model: Path, files: dict, out: Path, lr: float, seed: int, scratch: bool, args) -> tuple[float, float]:
    from finetune_text_classification import main as finetune_main

    argv = ["--model_name_or_path", str(model), "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]), "--output_dir", str(out), "--overwrite_output_dir",
            "--learning_rate", str(lr), "--seed", str(seed), "--num_train_epochs", str(args.epochs),
            "--max_seq_length", str(args.max_seq_length), "--per_device_train_batch_size", "32",
            "--warmup_steps", "0.1", "--eval_strategy", "no", "--logging_steps", "1000",
            "--disable_tqdm", "true"] + (["--from_scratch"] if scratch else [])
    val = finetune_main(argv)["eval_accuracy"]
    return val, test_accuracy(out, files["test"], args.max_seq_length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", type=Path, default=Path("/tmp/hfssl-gain"))
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--pretrained", type=Path, default=None, help="skip pretraining, use this folder")
    p.add_argument("--tasks", nargs="+", default=["bbc", "wordnet"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lrs_pretrained", type=float, nargs="+", default=[3e-4, 1e-3, 2e-3, 3e-3])
    p.add_argument("--lrs_scratch", type=float, nargs="+", default=[3e-4, 1e-3, 2e-3, 3e-3])
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--pretrain_args", nargs=argparse.REMAINDER, default=[],
                   help="everything after this goes to recipes/bert_mlm.py")
    args = p.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    tasks = prepare_tasks(args.work_dir, args.data)
    model = args.pretrained or pretrain(args.work_dir, args.pretrain_args)
    results = {}
    for task in args.tasks:
        for init, lrs in (("pretrained", args.lrs_pretrained), ("scratch", args.lrs_scratch)):
            runs = {lr: [finetune(model, tasks[task], args.work_dir / "ft" / f"{task}-{init}-{lr}-{s}", lr, s,
                                  init == "scratch", args) for s in args.seeds] for lr in lrs}
            for lr, r in runs.items():
                print(f"{task:8s} {init:10s} lr {lr:g}: val {[round(v, 3) for v, _ in r]} "
                      f"test {[round(t, 3) for _, t in r]}", flush=True)
            best = max(runs, key=lambda lr: statistics.mean(v for v, _ in runs[lr]))
            results[(task, init)] = (best, [t for _, t in runs[best]])
    print("\n| task | init | fine-tune lr (by validation) | test accuracy, mean ± sd over seeds | gain |")
    print("| --- | --- | --- | --- | --- |")
    for task in args.tasks:
        base = statistics.mean(results[(task, "scratch")][1])
        for init in ("pretrained", "scratch"):
            lr, acc = results[(task, init)]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            gain = f"{100 * (statistics.mean(acc) - base):+.1f}" if init == "pretrained" else ""
            print(f"| {task} | {init} | {lr:g} | {100 * statistics.mean(acc):.1f} ± {100 * sd:.1f} | {gain} |")
    (args.work_dir / "results.json").write_text(json.dumps({f"{t}/{i}": v for (t, i), v in results.items()}))


if __name__ == "__main__":
    main()
