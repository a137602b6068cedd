"""Pretrain a wav2vec 2.0 speech encoder (masked spans, quantized targets, contrastive loss) on raw audio.

    accelerate launch recipes/wav2vec2.py [--config recipes/configs/wav2vec2_tiny.yaml] [--flag value ...]

With no arguments: recipes/configs/wav2vec2_tiny.yaml, a tiny model on the embedded speech sample (a smoke run
of a few minutes on a CPU). Writes OUTPUT/model, a Wav2Vec2ForPreTraining folder with a Wav2Vec2FeatureExtractor
that AutoModelForCTC / AutoModelForAudioClassification fine-tune with only their head new
(recipes/finetune_ctc.py, recipes/finetune_audio_classification.py).
Sections: args, Accelerator, seed -> audio (main process first, decoded once) -> model -> fit -> export.
"""

from dataclasses import asdict
from pathlib import Path

from hfssl.audio.data import AudioDataArgs, collate_audio, eval_data, load_audio, settle, training_data
from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.hub import HubArgs, push_if_requested
from hfssl.methods.wav2vec2 import (
    Wav2Vec2Args,
    Wav2Vec2Masking,
    Wav2Vec2Pretrainer,
    export_wav2vec2,
    folder_config,
    required_samples,
    wav2vec2_config,
    wav2vec2_eval_step,
    wav2vec2_summary,
)
from hfssl.train import TrainArgs, fit, make_accelerator

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "wav2vec2_tiny.yaml"


def main(argv=None):
    data_args, w2v_args, train_args, hub_args = parse(AudioDataArgs, Wav2Vec2Args, TrainArgs, HubArgs, args=argv,
                                                      default_config=DEFAULT_CONFIG,
                                                      continue_config=DEFAULT_CONFIG.with_name("wav2vec2_continue.yaml"))
    path = w2v_args.model_name_or_path
    config = folder_config(w2v_args, path) if path else wav2vec2_config(w2v_args)  # before any data work
    settle(data_args)  # storage auto -> decoded / encoded: what checkpoints record
    settings = run_settings(train_args, data_args, w2v_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    # Audio: decoded and checked once (cached by datasets); crops are drawn in the loader per (seed, epoch, row),
    # masks and negatives per step from the loop's generator; the held-out clips and their masks are fixed.
    shortest = required_samples(config, w2v_args.mask_time_length)
    with accelerator.main_process_first():
        data = load_audio(data_args, shortest, seed=train_args.seed)
    accelerator.print(data.report)
    if path:
        model, new = Wav2Vec2Pretrainer.from_folder(path, config, w2v_args)
        accelerator.print(f"continuing from {path}; initialised (not in the folder): {', '.join(new) or 'none'}")
    else:
        model = Wav2Vec2Pretrainer(config, w2v_args)
    accelerator.print(f"model: wav2vec 2.0 {w2v_args.preset or path}, "
                      f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                      f"{config.num_hidden_layers} x {config.hidden_size}; clips up to {data_args.max_seconds:g} s, "
                      f"shortest usable {shortest / 16000:.2f} s")

    result = fit(accelerator, model, train_args,
                 train_data=training_data(data, data_args.max_samples, train_args.seed), collate_fn=collate_audio,
                 transform=Wav2Vec2Masking(config, w2v_args.mask_time_prob),
                 eval_data=eval_data(data, data_args.max_samples),
                 eval_step=wav2vec2_eval_step(w2v_args.mask_time_prob, train_args.seed),
                 eval_summary=wav2vec2_summary, on_step_end=lambda m, step, total: m.step_end(step, total),
                 settings=settings)

    if accelerator.is_main_process:
        metrics = {**result.eval_metrics, "steps": result.step}
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method="wav2vec2", base_model_type="wav2vec2",
            tags=["wav2vec2", "audio", "speech", "feature-extraction"], pipeline_tag="feature-extraction",
            datasets_description=f"{data.report}; 16 kHz mono, crops of up to {data_args.max_seconds:g} s",
            hyperparameters={**asdict(w2v_args), **asdict(data_args), **asdict(train_args)},
            metrics=metrics, report=out / "report.png",
            usage=_USAGE.format(folder=hub_args.hub_model_id or "PATH/TO/model"))
        folder = export_wav2vec2(result.model, out / "model", card=card,
                                 overwrite=train_args.overwrite_output_dir or train_args.resume,
                                 secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained encoder to {folder} (AutoModelForCTC / AutoModelForAudioClassification"
              f".from_pretrained('{folder}', ...): recipes/finetune_ctc.py, recipes/finetune_audio_classification.py)")
        push_if_requested(folder, hub_args)


_USAGE = """from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoModelForAudioClassification

extractor = AutoFeatureExtractor.from_pretrained("{folder}")  # 16 kHz mono, normalised per clip
ctc = AutoModelForCTC.from_pretrained("{folder}", vocab_size=32)  # only lm_head is new
classifier = AutoModelForAudioClassification.from_pretrained("{folder}", num_labels=10)  # projector + classifier new
"""


if __name__ == "__main__":
    run_cli(main)
