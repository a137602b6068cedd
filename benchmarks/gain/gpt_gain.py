"""Does GPT pretraining help? recipes/gpt_clm.py checkpoints vs the same architecture from scratch, fine-tuned alike,
and against the BERT default at equal minutes; with benchmarks/gain/lm_baselines.py, held-out bits per byte against
unigram and bigram baselines.

The protocol (issue #31 point 6), from the repository root; W is a work folder. Steps 1 and 4 pretrain alone on the
machine with 2 threads: 30 training minutes each (evaluations and checkpoints not counted), ``--max_steps -1``
lifting the config's step limit (5,000 GPT / 10,000 BERT steps), which would otherwise end a fast run before the
budget and make the minutes unequal. Both recipes pretrain with their defaults on the embedded Austen corpus (no
BBC or WordNet text), so both see the same text:

    W=/tmp/gpt_gain
    # 1. GPT, one pretraining per seed (the seed also draws the held-out split and so the BPE trained on the rest)
    for S in 0 1 2; do
        OMP_NUM_THREADS=2 python recipes/gpt_clm.py --max_train_minutes 30 --max_steps -1 --seed $S \\
            --output_dir $W/gpt_s$S
    done
    # 2. held-out bits per byte of each run against unigram / bigram baselines (tokens and bytes) on its split
    python benchmarks/gain/lm_baselines.py --run_dirs $W/gpt_s0 $W/gpt_s1 $W/gpt_s2 --out $W/lm_baselines.json \\
        --threads 2
    # 3. fine-tuning gains: BBC topics, word order, WordNet categories; seed S fine-tunes the model of seed S
    python benchmarks/gain/gpt_gain.py finetune --work_dir $W --name gpt30 --probe --seeds 0 1 2 --threads 2 \\
        --models $W/gpt_s0/model $W/gpt_s1/model $W/gpt_s2/model
    # 4. the BERT default at equal minutes, through the same tasks and protocol
    for S in 0 1 2; do
        OMP_NUM_THREADS=2 python recipes/bert_mlm.py --max_train_minutes 30 --max_steps -1 --seed $S \\
            --output_dir $W/bert_s$S
    done
    python benchmarks/gain/gpt_gain.py finetune --work_dir $W --name bert30 --probe --seeds 0 1 2 --threads 2 \\
        --models $W/bert_s0/model $W/bert_s1/model $W/bert_s2/model
    # 5. the tables (markdown, mean +- sd over the seeds)
    python benchmarks/gain/gpt_gain.py summary --work_dir $W --gpt gpt30 --bert bert30 \\
        --baselines $W/lm_baselines.json

Goals: the pretrained GPT below both bigram baselines in held-out bits per byte; fine-tuned, >= +2 points of test
accuracy over the same GPT from scratch on each task. GPT against BERT is reported, not a goal.

``finetune`` runs the fine-tuning protocol of benchmarks/gain/pretraining_gain.py with its own code (imported: the
task files and their splits, :func:`pretraining_gain.finetune`, its fingerprinted result cache, the probe), on any
folder that ``AutoModelForSequenceClassification`` loads: for a GPT-2 / Llama folder that is the last-token head
(``GPT2ForSequenceClassification``: the score of the last token that is not the config's ``pad_token_id``, which
recipes/gpt_clm.py writes into the exported config; a folder without one is refused), for BERT the ``[CLS]`` head.

* Each seed's run: recipes/finetune_text_classification.py (the standard Trainer), 5 epochs, batch 32, 10 % warmup,
  at every learning rate of the grid (default 3e-4 / 1e-3 / 2e-3 / 3e-3, both arms); each arm's rate is chosen by
  mean *validation* accuracy over the seeds, its *test* accuracy reported: mean +- sd over seeds, and the gain.
* ``--models``: one folder per seed, paired in order (seed S fine-tunes the pretraining of seed S, so the spread
  includes the pretraining's), or one folder that every seed fine-tunes (pretraining_gain.py's protocol).
* Scratch arm: the same config randomly initialised (``--from_scratch``) with the same tokenizer, one per pretrained
  folder and seed. Runs stay in ``W/ft/TASK-TAG-LR-SEED`` and are read back only for the same weights (scratch:
  config and tokenizer files), task files and flags (:func:`pretraining_gain.run_fingerprint`); scratch tags are
  ``scratch_MODELTYPE_DIGEST``, as in pretraining_gain.py, so the two scripts share scratch runs of identical folders.
* ``--probe``: the frozen probe of pretraining_gain.py (logistic regression, C by validation) on the **mean-pooled**
  last hidden states (padding masked), pretrained vs a random init of the same config per seed. Mean-pooled, not
  the last token: it is the probe of the BERT tables, so the numbers compare; and a causal LM's last position holds
  what predicts the *next* token, one position of a tiny model, while the mean over positions is the usual frozen
  sentence feature of a decoder (e.g. SGPT, Muennighoff 2022). Fine-tuning reads the last token, as transformers'
  head does.
* The pretrained GPT keeps its config's dropout (0: the recipe pretrains without it), and so does its scratch arm;
  BERT fine-tunes with its config's 0.1.

Toy check of the whole chain (a minute or two on one thread; numbers meaningless):

    W=/tmp/gpt_gain_toy
    OMP_NUM_THREADS=1 python recipes/gpt_clm.py --max_steps 20 --eval_steps 10 --save_steps 20 --seed 0 \\
        --output_dir $W/gpt_s0
    python benchmarks/gain/lm_baselines.py --run_dirs $W/gpt_s0 --out $W/lm_baselines.json --threads 1
    python benchmarks/gain/gpt_gain.py finetune --work_dir $W --name gpt_toy --models $W/gpt_s0/model --seeds 0 \\
        --tasks bbc --epochs 0.2 --lrs_pretrained 1e-3 --lrs_scratch 1e-3 --probe --threads 1
    OMP_NUM_THREADS=1 python recipes/bert_mlm.py --max_steps 20 --eval_steps 0 --save_steps 0 --output_dir $W/bert_s0
    python benchmarks/gain/gpt_gain.py finetune --work_dir $W --name bert_toy --models $W/bert_s0/model --seeds 0 \\
        --tasks bbc --epochs 0.2 --lrs_pretrained 1e-3 --lrs_scratch 1e-3 --probe --threads 1
    python benchmarks/gain/gpt_gain.py summary --work_dir $W --gpt gpt_toy --bert bert_toy \\
        --baselines $W/lm_baselines.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pretraining_gain as gain  # noqa: E402  (puts recipes/ on the path too)

TASKS = ["bbc", "wordnet_order", "wordnet"]
TASK_NAMES = {"bbc": "BBC topics", "wordnet_order": "word order", "wordnet": "WordNet categories",
              "wordnet_negation": "negation", "wordnet_polarity": "polarity",
              "wordnet_polarity_unseen": "polarity, unseen words"}
GOAL = 2.0  # points of test accuracy over scratch, each task


def model_type(folder: Path) -> str:
    """The folder's ``config.json`` model_type; a causal LM (GPT-2, Llama, ...) must name its pad token there."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    path = folder / "config.json"
    if not path.is_file():
        raise SystemExit(f"error: {folder} has no config.json; give the OUTPUT/model folder of a pretraining recipe")
    config = json.loads(path.read_text())
    kind = config.get("model_type")
    causal = kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if causal and config.get("pad_token_id") is None:
        raise SystemExit(f"error: {path} has no pad_token_id: the last-token classification head finds the end of a "
                         "padded text by it; set it to the tokenizer's pad (or eos) id, as recipes/gpt_clm.py does")
    return kind


def pair_models(models: list[Path], seeds: list[int]) -> list[Path]:
    """The pretrained folder each seed fine-tunes: one per seed in order, or one for all."""
    if len(models) == 1:
        return models * len(seeds)
    if len(models) != len(seeds):
        raise SystemExit(f"error: {len(models)} --models for {len(seeds)} --seeds; give one folder per seed (paired in "
                         "order) or one folder for every seed")
    return list(models)


def scratch_tag(kind: str, model: Path) -> str:
    """Run-folder tag of a scratch arm: keyed by the config and tokenizer files (pretraining_gain.py's naming)."""
    return f"scratch_{kind}_{gain.folder_digest(model, weights=False)[:8]}"


def models_digest(models: list[Path]) -> str:
    return hashlib.sha256("\n".join(gain.folder_digest(m) for m in models).encode()).hexdigest()


def earlier_results(path: Path, models: list[Path], seeds: list[int]) -> dict:
    """The results file of this ``--name`` to merge into; one of other models or seeds is refused."""
    digest = models_digest(models)
    merged = json.loads(path.read_text()) if path.is_file() else {"models_digest": digest, "seeds": seeds}
    if merged.get("models_digest") != digest or merged.get("seeds") != seeds:
        raise SystemExit(f"error: {path} holds results of other models or seeds than {[str(m) for m in models]}, "
                         f"seeds {seeds}, --name; pass another --name (or --work_dir), or delete that file")
    return merged


def run_finetune(args) -> None:
    if args.threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    models = [m.resolve() for m in args.models]
    kinds = {model_type(m) for m in models}
    if len(kinds) != 1:
        raise SystemExit(f"error: --models mixes model types {sorted(kinds)}; give the folders of one recipe")
    kind = kinds.pop()
    per_seed = pair_models(models, args.seeds)
    tasks = gain.prepare_tasks(args.work_dir, args.data)
    tasks.update(gain.generated_tasks(args.work_dir, [t for t in args.tasks if t in gain.GENERATED]))
    out = args.work_dir / f"results_{args.name}.json"
    merged = earlier_results(out, models, args.seeds)
    results, probes = {}, {}
    for task in args.tasks:
        if args.probe:
            probes[task] = {"pretrained": [], "random": []}
            for model in dict.fromkeys(per_seed):  # each folder once, with the random inits of its seeds
                seeds = [s for m, s in zip(per_seed, args.seeds) if m == model]
                r = gain.probe(model, tasks[task], seeds, args.max_seq_length)
                probes[task]["pretrained"] += r["pretrained"]
                probes[task]["random"] += r["random"]
            print(f"{task:8s} frozen mean-pooled probe: pretrained {probes[task]['pretrained']} "
                  f"random {probes[task]['random']}", flush=True)
        for init, lrs in (("pretrained", args.lrs_pretrained), ("scratch", args.lrs_scratch)):
            runs = {}
            for lr in lrs:
                runs[lr] = []
                for model, seed in zip(per_seed, args.seeds):
                    tag = args.name if init == "pretrained" else scratch_tag(kind, model)
                    runs[lr].append(gain.finetune(model, tasks[task], args.work_dir / "ft" / f"{task}-{tag}-{lr}-{seed}",
                                                  lr, seed, init == "scratch", args))
                print(f"{task:8s} {init:10s} lr {lr:g}: val {[round(v, 3) for v, _ in runs[lr]]} "
                      f"test {[round(t, 3) for _, t in runs[lr]]}", flush=True)
            best = max(runs, key=lambda lr: statistics.mean(v for v, _ in runs[lr]))
            results[(task, init)] = (best, [t for _, t in runs[best]])
    merged.update({"model_type": kind, "models": [str(m) for m in models],
                   **{f"{t}/{i}": v for (t, i), v in results.items()}, **{f"{t}/probe": v for t, v in probes.items()}})
    out.write_text(json.dumps(merged))
    print()
    print(gain_table({args.name: merged}, args.tasks))
    if probes:
        print()
        print(probe_table({args.name: merged}, args.tasks))


# --- tables ------------------------------------------------------------------------------------------------

def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    mean, sd = _ms(values)
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def gain_table(named: dict[str, dict], tasks: list[str]) -> str:
    """Markdown: per task, each model's pretrained and scratch test accuracy (lr by validation) and its gain; with
    two models, the first minus the second (pretrained arms)."""
    names = list(named)
    head = ["task"]
    for name in names:
        kind = named[name].get("model_type", name)
        head += [f"{name} ({kind}) pretrained", f"{kind} scratch", f"{name} gain"]
    if len(names) == 2:
        head.append(f"{names[0]} - {names[1]}")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for task in tasks:
        if not all(f"{task}/pretrained" in named[n] for n in names):
            continue
        row, means = [TASK_NAMES.get(task, task)], []
        for name in names:
            (lr_p, pre), (lr_s, scr) = named[name][f"{task}/pretrained"], named[name][f"{task}/scratch"]
            gain_points = 100 * (statistics.mean(pre) - statistics.mean(scr))
            mark = "**" if gain_points >= GOAL else ""
            row += [f"{_cell(pre)} (lr {lr_p:g})", f"{_cell(scr)} (lr {lr_s:g})", f"{mark}{gain_points:+.1f}{mark}"]
            means.append(statistics.mean(pre))
        if len(names) == 2:
            row.append(f"{100 * (means[0] - means[1]):+.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def probe_table(named: dict[str, dict], tasks: list[str]) -> str:
    """Markdown: the frozen mean-pooled probe, pretrained vs random inits, per model."""
    names = [n for n in named if any(f"{t}/probe" in named[n] for t in tasks)]
    head = ["task"]
    for name in names:
        head += [f"{name} frozen probe: pretrained", "random inits", "probe gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for task in tasks:
        if not all(f"{task}/probe" in named[n] for n in names):
            continue
        row = [TASK_NAMES.get(task, task)]
        for name in names:
            r = named[name][f"{task}/probe"]
            row += [_cell(r["pretrained"]), _cell(r["random"]),
                    f"{100 * (statistics.mean(r['pretrained']) - statistics.mean(r['random'])):+.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_summary(args) -> None:
    import lm_baselines

    if args.baselines:
        runs = json.loads(args.baselines.read_text())["runs"]
        print(lm_baselines.table(runs))
        print()
    named = {}
    for name in filter(None, (args.gpt, args.bert)):
        path = args.work_dir / f"results_{name}.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; run `gpt_gain.py finetune --name {name}` first")
        named[name] = json.loads(path.read_text())
    seeds = {n: r.get("seeds") for n, r in named.items()}
    print(f"fine-tuned test accuracy (%), mean ± sd over seeds {seeds}; lr by mean validation accuracy; gain = "
          f"pretrained - scratch (bold: the goal, >= +{GOAL:g})\n")
    print(gain_table(named, args.tasks))
    if any(f"{t}/probe" in r for r in named.values() for t in args.tasks):
        print()
        print(probe_table(named, args.tasks))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tuning gains of pretrained folders (one per seed, or one)")
    ft.add_argument("--work_dir", type=Path, required=True)
    ft.add_argument("--data", type=Path, default=gain.DATA)
    ft.add_argument("--models", type=Path, nargs="+", required=True, help="OUTPUT/model folders, one per seed or one")
    ft.add_argument("--name", required=True, help="results_NAME.json in --work_dir; the pretrained arms' run tag")
    ft.add_argument("--tasks", nargs="+", default=TASKS, choices=["bbc", "wordnet", *gain.GENERATED])
    ft.add_argument("--probe", action="store_true", help="also the frozen mean-pooled probe vs random inits")
    ft.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ft.add_argument("--lrs_pretrained", type=float, nargs="+", default=[3e-4, 1e-3, 2e-3, 3e-3])
    ft.add_argument("--lrs_scratch", type=float, nargs="+", default=[3e-4, 1e-3, 2e-3, 3e-3])
    ft.add_argument("--epochs", type=float, default=5)
    ft.add_argument("--max_seq_length", type=int, default=128)
    ft.add_argument("--threads", type=int, default=None, help="CPU threads (torch and OMP_NUM_THREADS)")
    sm = sub.add_parser("summary", help="markdown tables: bits per byte and the gains, GPT beside BERT")
    sm.add_argument("--work_dir", type=Path, required=True)
    sm.add_argument("--gpt", default=None, help="--name of the GPT finetune call")
    sm.add_argument("--bert", default=None, help="--name of the BERT finetune call")
    sm.add_argument("--baselines", type=Path, default=None, help="lm_baselines.py --out file")
    sm.add_argument("--tasks", nargs="+", default=TASKS)
    args = p.parse_args(argv)
    if args.command == "finetune":
        run_finetune(args)
    else:
        run_summary(args)


if __name__ == "__main__":
    main()
