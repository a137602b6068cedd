"""benchmarks/gain/wav2vec2_gain.py: its MFCC against the formula written out with loops (explicit DFT, mel
triangles, DCT-II sums) on a tiny signal; the seeded per-class sample, the CTC test filter and the table."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "gain"))

import wav2vec2_gain as gain  # noqa: E402


def reference_mfcc(wave, rate, n_mfcc, n_filters, length, hop, n_fft):
    """MFCC straight from the definitions, no numpy FFT / scipy DCT."""
    x = [wave[0]] + [wave[i] - 0.97 * wave[i - 1] for i in range(1, len(wave))]
    mel = [2595 * math.log10(1 + f / 700) for f in (0, rate / 2)]
    points = [700 * (10 ** ((mel[0] + (mel[1] - mel[0]) * i / (n_filters + 1)) / 2595) - 1)
              for i in range(n_filters + 2)]
    bins = [math.floor((n_fft + 1) * p / rate) for p in points]
    out = []
    for start in range(0, len(x) - length + 1, hop):
        frame = [x[start + n] * (0.54 - 0.46 * math.cos(2 * math.pi * n / (length - 1))) for n in range(length)]
        power = []
        for k in range(n_fft // 2 + 1):
            re = sum(frame[n] * math.cos(2 * math.pi * k * n / n_fft) for n in range(length))
            im = sum(frame[n] * math.sin(2 * math.pi * k * n / n_fft) for n in range(length))
            power.append((re * re + im * im) / n_fft)
        logs = []
        for i in range(n_filters):
            lo, mid, hi = bins[i], bins[i + 1], bins[i + 2]
            weight = [0.0] * len(power)
            for k in range(lo, mid):
                weight[k] = (k - lo) / max(mid - lo, 1)
            for k in range(mid, hi):
                weight[k] = (hi - k) / max(hi - mid, 1)
            logs.append(math.log(max(sum(w * p for w, p in zip(weight, power)), np.finfo(float).eps)))
        m = len(logs)
        out.append([math.sqrt((1 if q == 0 else 2) / m) * sum(logs[i] * math.cos(math.pi * q * (2 * i + 1) / (2 * m))
                                                              for i in range(m)) for q in range(n_mfcc)])
    return np.array(out)


def test_mfcc_matches_the_formula_on_a_tiny_signal():
    rate = 4000  # 25 ms = 100 samples, hop 40, a 128-point FFT: cheap in pure Python
    t = np.arange(260) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(0).normal(size=len(t))
    got = gain.mfcc(wave, rate=rate, n_mfcc=6, n_filters=10, n_fft=128)
    want = reference_mfcc(list(wave), rate, 6, 10, 100, 40, 128)
    assert got.shape == want.shape == (5, 6)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)


def test_mfcc_features_tell_two_tones_apart():
    t = np.arange(8000) / 16_000
    feats = gain.mfcc_features([np.sin(2 * np.pi * f * t) for f in (300, 300, 2000)])
    assert feats.shape == (3, 26)
    assert np.linalg.norm(feats[0] - feats[1]) < 1e-9 < np.linalg.norm(feats[0] - feats[2])


def test_per_class_sample_is_seeded_and_balanced():
    rows = [{"path": f"{w}{i}", "label": w} for w in ("yes", "no") for i in range(6)]
    a, b = gain.per_class_sample(rows, 3, seed=1), gain.per_class_sample(rows, 3, seed=1)
    assert a == b and [r["label"] for r in a] == ["no"] * 3 + ["yes"] * 3
    assert a != gain.per_class_sample(rows, 3, seed=2)
    with pytest.raises(SystemExit, match="fewer than --per_class 7"):
        gain.per_class_sample(rows, 7, seed=0)


def test_ctc_test_rows_need_training_characters_and_the_table():
    kept, dropped = gain.known_characters([{"transcript": "a cab"}], [{"transcript": "bac"}, {"transcript": "bad"}])
    assert kept == [{"transcript": "bac"}] and dropped == 1
    runs = {str(s): {"keywords": {"pretrained": p, "scratch": 0.5},
                     "ctc": {"pretrained": {"cer": 0.3, "wer": 0.6}, "scratch": {"cer": 0.5, "wer": 0.9}},
                     "probe": {"pretrained": 0.8, "random init": 0.6, "MFCC": 0.7}} for s, p in ((0, 0.6), (1, 0.8))}
    table = gain.tables({"seeds": [0, 1], "runs": runs})
    assert "| keywords accuracy (%) | 70.0 +- 10.0 | 50.0 +- 0.0 | 20.0 +- 10.0 |" in table
    assert "| CTC CER (%, lower is better) | 30.0 +- 0.0 | 50.0 +- 0.0 | -20.0 +- 0.0 |" in table
    assert "| MFCC (13), mean + std over frames | 70.0 +- 0.0 |" in table
