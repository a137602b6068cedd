"""hfssl.audio: decoding and resampling against known sines, padding + attention masks against
Wav2Vec2FeatureExtractor, bad / silent / short files skipped, counted and named, crops fixed by (seed, epoch, row)."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from transformers import Wav2Vec2FeatureExtractor

from hfssl.audio.data import AudioCrops, AudioDataArgs, collate_audio, load_audio
from hfssl.audio.decode import AudioDecodeError, read_audio
from hfssl.errors import UserError


def tone(freq: float, rate: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave] + [wave * 0.5] * (channels - 1), axis=1)


def peak_hz(wave: np.ndarray, rate: int = 16_000) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rate,suffix", [(44_100, ".wav"), (8_000, ".flac"), (22_050, ".ogg"), (48_000, ".mp3")])
def test_decoding_resamples_to_16k_and_keeps_the_frequency(tmp_path, rate, suffix):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, tone(440.0, rate, 1.0), rate)
    wave = read_audio(path)
    assert wave.dtype == np.float32
    assert abs(len(wave) - 16_000) <= 16_000 * 0.01 + 1200  # mp3 adds encoder delay / padding frames
    assert abs(peak_hz(wave) - 440.0) <= 2.0


def test_stereo_becomes_the_channel_mean(tmp_path):
    left, right = tone(300.0, 16_000, 0.5), tone(700.0, 16_000, 0.5, amp=0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 16_000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(tmp_path / "s.wav"), (left + right) / 2, atol=1e-6)


def test_an_unsupported_codec_names_the_file(tmp_path):
    bad = tmp_path / "voice.m4a"
    bad.write_bytes(b"\x00\x00\x00\x18ftypM4A " + b"\x00" * 200)
    with pytest.raises(AudioDecodeError, match="voice.m4a.*libsndfile"):
        read_audio(bad)


def test_collate_pads_and_normalises_like_the_feature_extractor():
    rng = np.random.default_rng(0)
    clips = [rng.normal(0.3, 2.0, n).astype(np.float32) for n in (800, 500, 1200)]
    batch = collate_audio([{"input_values": c} for c in clips])
    ref = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)(
        clips, sampling_rate=16_000, padding=True, return_tensors="np")
    assert batch["input_values"].shape == (3, 1200)
    np.testing.assert_array_equal(batch["attention_mask"].numpy(), ref["attention_mask"])
    np.testing.assert_allclose(batch["input_values"].numpy(), ref["input_values"], atol=1e-5)


def make_folder(root, rate=22_050):
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        sf.write(root / ("sub" if i % 2 else "") / f"clip{i}.wav", tone(200.0 + 50 * i, rate, 1.0 + 0.25 * i), rate)
    sf.write(root / "quiet.flac", np.zeros(rate, np.float32), rate)
    sf.write(root / "short.wav", tone(300.0, rate, 0.05), rate)
    (root / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    (root / "empty.ogg").write_bytes(b"")
    return root


@pytest.mark.parametrize("storage", ["decoded", "encoded"])
def test_bad_files_are_skipped_counted_and_named(tmp_path, storage):
    args = AudioDataArgs(data=str(make_folder(tmp_path / "a")), eval_fraction=0.0, storage=storage,
                         cache_dir=str(tmp_path / "cache"))
    data = load_audio(args, min_samples=3000)
    assert data.report.train == 6 and len(data.train) == 6
    skipped = dict(data.report.skipped)
    assert set(map(lambda p: p.rsplit("/", 1)[-1], skipped)) == {"quiet.flac", "short.wav", "broken.wav", "empty.ogg"}
    text = str(data.report)
    assert "4 file(s) skipped" in text and "silent" in text and "too short" in text
    assert "broken.wav" in text and "empty.ogg" in text
    crops = AudioCrops(8000, seed=1, epoch=0)
    rows = data.train[:]
    out = crops(rows)
    assert [len(w) for w in out["input_values"]] == [min(8000, round(16_000 * (1.0 + 0.25 * i))) for i in range(6)]


def test_decoded_and_encoded_crops_are_the_same_audio(tmp_path):
    folder = make_folder(tmp_path / "a")
    got = {}
    for storage in ("decoded", "encoded"):
        data = load_audio(AudioDataArgs(data=str(folder), eval_fraction=0.0, storage=storage,
                                        cache_dir=str(tmp_path / "cache")), min_samples=3000)
        got[storage] = AudioCrops(8000, seed=3, epoch=2)(data.train[:])["input_values"]
    peaks = []
    for a, b in zip(got["decoded"], got["encoded"]):  # clip i is a tone of 200 + 50 i Hz
        assert len(a) == len(b)
        assert abs(peak_hz(a) - peak_hz(b)) <= 2
        peaks.append(peak_hz(a))
    assert sorted(round(p / 50) * 50 for p in peaks) == [200 + 50 * i for i in range(6)]


def test_crops_depend_on_seed_epoch_and_row_only():
    wave = np.arange(40_000, dtype=np.float32)
    batch = {"audio": [wave.tobytes()] * 2, "row": [0, 1]}
    a, b = AudioCrops(8000, 0, 0)(batch), AudioCrops(8000, 0, 0)(batch)
    c = AudioCrops(8000, 0, 1)(batch)
    assert [x[0] for x in a["input_values"]] == [x[0] for x in b["input_values"]]
    assert [x[0] for x in a["input_values"]] != [x[0] for x in c["input_values"]]
    assert AudioCrops(8000, 0, None)(batch)["input_values"][0][0] == 0  # held-out: the start


def test_save_to_disk_audio_column(tmp_path):
    values = []
    for i in range(4):
        path = tmp_path / f"c{i}.flac"
        sf.write(path, tone(300.0, 8000, 1.0), 8000)
        values.append({"bytes": path.read_bytes() if i % 2 else None, "path": str(path)})
    table = pa.table({"speech": pa.array(values, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))})
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=datasets.Features({"speech": datasets.Audio()})))
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_audio(AudioDataArgs(data=str(tmp_path / "saved"), audio_column="speech", eval_fraction=0.25,
                                    cache_dir=str(tmp_path / "cache")), min_samples=3000)
    assert (data.report.train, data.report.eval) == (3, 1)
    with pytest.raises(UserError, match="no audio column 'audio'"):
        load_audio(AudioDataArgs(data=str(tmp_path / "saved"), cache_dir=str(tmp_path / "cache")), min_samples=1)


def test_a_folder_without_usable_audio_is_one_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("hi")
    with pytest.raises(UserError, match="no audio files"):
        load_audio(AudioDataArgs(data=str(tmp_path / "x")), min_samples=1)
    (tmp_path / "y").mkdir()
    sf.write(tmp_path / "y" / "s.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(UserError, match=r"no usable audio.*s.wav \(silent"):
        load_audio(AudioDataArgs(data=str(tmp_path / "y"), cache_dir=str(tmp_path / "c")), min_samples=1)
