"""Does wav2vec 2.0 pretraining pay? Keywords and CTC on held-out voices, pretrained vs scratch; a frozen probe.

The protocol (issue #33 point 5), from the repository root on 2 cores; W is a work folder. Speech made with
benchmarks/data/make_speech.py (espeak-ng + sox; ``apt-get install -y espeak-ng sox``), pretraining of 30 training
minutes per seed (``--max_steps -1`` lifts the config's step limit), then this script:

    W=/tmp/w2v_gain
    python benchmarks/data/make_speech.py unlabelled --out $W/speech/unlabelled --minutes 60
    python benchmarks/data/make_speech.py keywords --out $W/speech/keywords --clips_per_voice 1
    python benchmarks/data/make_speech.py sentences --out $W/speech/sentences --count 200 --test_count 100
    for S in 0 1 2; do   # 1. pretraining, one per seed (alone on the machine)
        OMP_NUM_THREADS=2 python recipes/wav2vec2.py --data $W/speech/unlabelled --max_train_minutes 30 \\
            --max_steps -1 --seed $S --output_dir $W/pretrain_s$S
    done
    python benchmarks/gain/wav2vec2_gain.py --work_dir $W --speech $W/speech --seeds 0 1 2 --threads 2 \\
        --models $W/pretrain_s0/model $W/pretrain_s1/model $W/pretrain_s2/model   # 2. fine-tuning + probe

(Without ``--models`` the script runs step 1 itself: ``--pretrain_minutes 30 [--pretrain_data DIR]``.)
Goals: keywords >= +5 points of accuracy over scratch; CTC character error rate >= 5 points below scratch.

Per seed S (seed S fine-tunes the pretraining of seed S when one folder per seed is given):

* (a) keywords: ``--per_class`` (10) clips of each word drawn (seeded) from the training voices' clips
  (``keywords/train.csv``); recipes/finetune_audio_classification.py on them, scored on every clip of the
  held-out voices (``keywords/test.csv``); once from the pretrained folder, once ``--from_scratch`` (same config,
  feature extractor, steps, seed).
* (b) CTC: ``--ctc_sentences`` (200) training sentences (seeded sample of ``sentences/train.csv``, training voices);
  recipes/finetune_ctc.py, CER and WER (jiwer, greedy decoding) on ``sentences/test.csv`` (other sentences, held-out
  voices; a test sentence with a letter the training sentences never use is left out, and counted). The
  pretrained arm keeps its feature encoder frozen (wav2vec 2.0's fine-tuning); the scratch arm trains
  it (``--freeze_feature_encoder false``): a frozen random encoder would be an unfair baseline.
* (c) frozen probe on the keywords of (a): logistic regression (scikit-learn, standardised features, C=1) on the
  last hidden states mean-pooled over frames of the pretrained encoder, of a random init of the same config
  (``torch.manual_seed(S)``), and on MFCCs (13 coefficients, 25 ms / 10 ms frames, 40 mel bands, :func:`mfcc`:
  numpy, the HTK / python_speech_features formula) mean- and std-pooled over frames.

Tables (markdown, mean +- sd over the seeds) at the end and in ``W/results.json``. A toy run of the whole chain
(pretraining 10 steps on the embedded sample, a few fine-tuning steps): ``--pretrain_minutes 0 --pretrain_args
"--max_steps 10" --finetune_args "--max_steps 3"``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.fft import dct

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work_dir", type=Path, required=True)
    p.add_argument("--speech", type=Path, required=True, help="folder with keywords/ and sentences/ of make_speech.py")
    p.add_argument("--models", type=Path, nargs="*", default=[], help="pretrained folders: one per seed, or one")
    p.add_argument("--pretrain_data", default=None, help="without --models: unlabelled audio to pretrain on "
                   "(default: the recipe's, the embedded sample)")
    p.add_argument("--pretrain_minutes", type=float, default=30.0, help="without --models: training minutes per "
                   "seed (0: only --pretrain_args limits the run)")
    p.add_argument("--pretrain_args", default="", help="more flags for recipes/wav2vec2.py (one string)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per_class", type=int, default=10, help="labelled keyword clips per class")
    p.add_argument("--ctc_sentences", type=int, default=200, help="transcribed training sentences")
    p.add_argument("--kws_epochs", type=float, default=30)
    p.add_argument("--kws_lr", type=float, default=3e-4)
    p.add_argument("--ctc_epochs", type=float, default=40)
    p.add_argument("--ctc_lr", type=float, default=5e-4)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--finetune_args", default="", help="more flags for both fine-tuning recipes (one string)")
    p.add_argument("--skip", nargs="*", default=[], choices=["keywords", "ctc", "probe"])
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


# ---------------------------------------------------------------- MFCC (numpy; no torchaudio / librosa)
def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int, n_fft: int, rate: int) -> np.ndarray:
    """``(n_filters, n_fft // 2 + 1)`` triangles on FFT bins, centres evenly spaced in mel from 0 to rate/2."""
    bins = np.floor((n_fft + 1) * mel_to_hz(np.linspace(0, hz_to_mel(rate / 2), n_filters + 2)) / rate).astype(int)
    bank = np.zeros((n_filters, n_fft // 2 + 1))
    for i in range(n_filters):
        left, centre, right = bins[i], bins[i + 1], bins[i + 2]
        for k in range(left, centre):
            bank[i, k] = (k - left) / max(centre - left, 1)
        for k in range(centre, right):
            bank[i, k] = (right - k) / max(right - centre, 1)
    return bank


def mfcc(wave: np.ndarray, rate: int = 16_000, n_mfcc: int = 13, n_filters: int = 40, frame_ms: float = 25.0,
         hop_ms: float = 10.0, n_fft: int = 512, preemphasis: float = 0.97) -> np.ndarray:
    """``(frames, n_mfcc)``: pre-emphasis, Hamming frames, power spectrum / n_fft, mel filterbank, log, DCT-II
    (orthonormal), the first ``n_mfcc`` coefficients."""
    x = np.append(wave[:1], wave[1:] - preemphasis * wave[:-1]).astype(np.float64)
    length, hop = int(rate * frame_ms / 1000), int(rate * hop_ms / 1000)
    if len(x) < length:
        x = np.pad(x, (0, length - len(x)))
    count = 1 + (len(x) - length) // hop
    frames = np.stack([x[i * hop: i * hop + length] for i in range(count)]) * np.hamming(length)
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    energies = np.maximum(power @ mel_filterbank(n_filters, n_fft, rate).T, np.finfo(float).eps)
    return dct(np.log(energies), type=2, axis=1, norm="ortho")[:, :n_mfcc]


def mfcc_features(waves: list[np.ndarray]) -> np.ndarray:
    """Per clip: the MFCCs' mean and standard deviation over frames (26 numbers)."""
    return np.stack([np.concatenate([m.mean(0), m.std(0)]) for m in (mfcc(w) for w in waves)])


# ---------------------------------------------------------------- data
def read_rows(path: Path) -> list[dict]:
    """Rows of a make_speech.py manifest, ``path`` made absolute."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{**r, "path": str((path.parent / r["path"]).resolve())} for r in csv.DictReader(f)]


def per_class_sample(rows: list[dict], per_class: int, seed: int) -> list[dict]:
    """``per_class`` rows of each label (seeded), in label then draw order; too few of a label is an error."""
    rng, out = random.Random(seed), []
    for label in sorted({r["label"] for r in rows}):
        pool = [r for r in rows if r["label"] == label]
        if len(pool) < per_class:
            raise SystemExit(f"error: {len(pool)} training clips of {label!r}, fewer than --per_class {per_class}")
        out += rng.sample(pool, per_class)
    return out


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([r[c] for c in columns] for r in rows)
    return path


# ---------------------------------------------------------------- runs
def run(script: str, args: list, threads: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(ROOT / script), *map(str, args)]
    print("running:", " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def pretrain(args, seed: int) -> Path:
    out = args.work_dir / f"pretrain_s{seed}"
    flags = ["--output_dir", out, "--overwrite_output_dir", "true", "--seed", seed]
    flags += ["--data", args.pretrain_data] if args.pretrain_data else []
    flags += ["--max_train_minutes", args.pretrain_minutes, "--max_steps", -1] if args.pretrain_minutes > 0 else []
    run("recipes/wav2vec2.py", [*flags, *shlex.split(args.pretrain_args)], args.threads)
    return out / "model"


def finetune(args, script: str, model: Path, out: Path, seed: int, scratch: bool, extra: list) -> dict:
    flags = ["--model_name_or_path", model, "--output_dir", out, "--overwrite_output_dir", "true", "--seed", seed,
             "--per_device_train_batch_size", args.batch_size, "--per_device_eval_batch_size", args.batch_size,
             "--eval_strategy", "no", "--logging_steps", 10, "--from_scratch", str(scratch).lower(), *extra,
             *shlex.split(args.finetune_args)]
    run(script, flags, args.threads)
    return json.loads((out / "eval_results.json").read_text())


def keywords_gain(args, model: Path, seed: int, train_csv: Path) -> dict:
    test = args.speech / "keywords" / "test.csv"
    extra = ["--train_file", train_csv, "--validation_file", test, "--num_train_epochs", args.kws_epochs,
             "--learning_rate", args.kws_lr]
    return {arm: finetune(args, "recipes/finetune_audio_classification.py", model,
                          args.work_dir / "ft" / f"kws-{arm}-s{seed}", seed, arm == "scratch", extra)["eval_accuracy"]
            for arm in ("pretrained", "scratch")}


def ctc_gain(args, model: Path, seed: int) -> dict:
    rows = read_rows(args.speech / "sentences" / "train.csv")
    if len(rows) < args.ctc_sentences:
        raise SystemExit(f"error: {len(rows)} training sentences, fewer than --ctc_sentences {args.ctc_sentences}")
    rows = random.Random(seed).sample(rows, args.ctc_sentences)
    train = write_rows(args.work_dir / "data" / f"ctc-s{seed}.csv", rows, ["path", "transcript"])
    test, dropped = known_characters(rows, read_rows(args.speech / "sentences" / "test.csv"))
    if dropped:
        print(f"CTC seed {seed}: {dropped} test sentence(s) left out: characters the {len(rows)} training "
              "sentences never use (the recipe refuses them)", flush=True)
    test_csv = write_rows(args.work_dir / "data" / f"ctc-test-s{seed}.csv", test, ["path", "transcript"])
    extra = ["--train_file", train, "--validation_file", test_csv,
             "--num_train_epochs", args.ctc_epochs, "--learning_rate", args.ctc_lr]
    out = {}
    for arm in ("pretrained", "scratch"):
        freeze = ["--freeze_feature_encoder", "false"] if arm == "scratch" else []
        m = finetune(args, "recipes/finetune_ctc.py", model, args.work_dir / "ft" / f"ctc-{arm}-s{seed}", seed,
                     arm == "scratch", extra + freeze)
        out[arm] = {"cer": m["eval_cer"], "wer": m["eval_wer"]}
    return out


def known_characters(train: list[dict], test: list[dict]) -> tuple[list[dict], int]:
    """The test rows whose transcripts use only characters of the training transcripts, and how many were not."""
    chars = {c for r in train for c in r["transcript"]}
    kept = [r for r in test if set(r["transcript"]) <= chars]
    return kept, len(test) - len(kept)


def encoder_features(model, extractor, waves: list[np.ndarray]) -> np.ndarray:
    """Last hidden states mean-pooled over the frames, one clip at a time (no padding)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for w in waves:
            inputs = extractor(w, sampling_rate=16_000, return_tensors="pt")
            out.append(model(inputs["input_values"]).last_hidden_state[0].mean(0).numpy())
    return np.stack(out)


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    return float((clf.fit(train_x, train_y).predict(test_x) == np.asarray(test_y)).mean())


def probe(model_path: Path, seed: int, train_rows: list[dict], test_rows: list[dict]) -> dict:
    import torch
    from transformers import AutoFeatureExtractor, Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model

    from hfssl.audio.decode import read_audio

    train_w, test_w = ([read_audio(r["path"]) for r in rows] for rows in (train_rows, test_rows))
    train_y, test_y = [r["label"] for r in train_rows], [r["label"] for r in test_rows]
    extractor = AutoFeatureExtractor.from_pretrained(model_path)
    torch.manual_seed(seed)
    models = {"pretrained": Wav2Vec2ForPreTraining.from_pretrained(model_path).wav2vec2,  # every tensor used
              "random init": Wav2Vec2Model(Wav2Vec2Config.from_pretrained(model_path))}
    out = {name: probe_accuracy(encoder_features(m, extractor, train_w), train_y,
                                encoder_features(m, extractor, test_w), test_y) for name, m in models.items()}
    out["MFCC"] = probe_accuracy(mfcc_features(train_w), train_y, mfcc_features(test_w), test_y)
    return out


# ---------------------------------------------------------------- tables
def mean_sd(values: list[float], scale: float = 100.0) -> str:
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.1f} +- {scale * sd:.1f}"


def tables(results: dict) -> str:
    seeds = results["seeds"]
    lines = [f"wav2vec 2.0 gain, seeds {seeds} (mean +- sd; held-out voices)"]
    per_seed = [results["runs"][str(s)] for s in seeds]
    if "keywords" in per_seed[0] or "ctc" in per_seed[0]:
        lines += ["", "| task | pretrained | scratch | pretrained - scratch |", "| --- | --- | --- | --- |"]
    if "keywords" in per_seed[0]:
        acc = [[r["keywords"][arm] for r in per_seed] for arm in ("pretrained", "scratch")]
        lines.append(f"| keywords accuracy (%) | {mean_sd(acc[0])} | {mean_sd(acc[1])} | "
                     f"{mean_sd([a - b for a, b in zip(*acc)])} |")
    if "ctc" in per_seed[0]:
        for key in ("cer", "wer"):
            v = [[r["ctc"][arm][key] for r in per_seed] for arm in ("pretrained", "scratch")]
            lines.append(f"| CTC {key.upper()} (%, lower is better) | {mean_sd(v[0])} | {mean_sd(v[1])} | "
                         f"{mean_sd([a - b for a, b in zip(*v)])} |")
    if "probe" in per_seed[0]:
        lines += ["", "| frozen features (keywords, logistic regression) | probe accuracy (%) |", "| --- | --- |"]
        for name in ("pretrained", "random init", "MFCC"):
            label = {"pretrained": "pretrained, mean-pooled last hidden states",
                     "random init": "random init, mean-pooled last hidden states",
                     "MFCC": "MFCC (13), mean + std over frames"}[name]
            lines.append(f"| {label} | {mean_sd([r['probe'][name] for r in per_seed])} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.models and len(args.models) not in (1, len(args.seeds)):
        raise SystemExit(f"error: --models: give one folder or one per seed ({len(args.seeds)}), not "
                         f"{len(args.models)}")
    kw_train = read_rows(args.speech / "keywords" / "train.csv")
    kw_test = read_rows(args.speech / "keywords" / "test.csv")
    results = {"seeds": args.seeds, "args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for i, seed in enumerate(args.seeds):
        model = (args.models[i] if len(args.models) > 1 else args.models[0]) if args.models else pretrain(args, seed)
        subset = per_class_sample(kw_train, args.per_class, seed)
        train_csv = write_rows(args.work_dir / "data" / f"kws-s{seed}.csv", subset, ["path", "label"])
        got = {"model": str(model)}
        if "keywords" not in args.skip:
            got["keywords"] = keywords_gain(args, model, seed, train_csv)
        if "ctc" not in args.skip:
            got["ctc"] = ctc_gain(args, model, seed)
        if "probe" not in args.skip:
            got["probe"] = probe(model, seed, subset, kw_test)
        print(f"seed {seed}: {json.dumps(got)}", flush=True)
        results["runs"][str(seed)] = got
        (args.work_dir / "results.json").write_text(json.dumps(results, indent=1))
    print("\n" + tables(results))


if __name__ == "__main__":
    main()
