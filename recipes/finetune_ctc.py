"""Fine-tune a speech recogniser with CTC (characters) and transformers' Trainer.

    python recipes/finetune_ctc.py --model_name_or_path runs/wav2vec2_tiny/model --output_dir runs/asr \
        --train_file train.csv --validation_file test.csv     # columns: path, transcript

The character vocabulary is built from the training transcripts ([PAD] = CTC blank, [UNK], | between words) and
saved as a Wav2Vec2CTCTokenizer inside a Wav2Vec2Processor with the model folder's feature extractor, so
pipeline("automatic-speech-recognition", model=OUTPUT_DIR) transcribes with the saved model. Word and character
error rates (jiwer) at every evaluation. A validation transcript with characters the training transcripts never
use is an error naming its row.
"""

from dataclasses import dataclass, field

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForCTC,
    Trainer,
    Wav2Vec2Processor,
    set_seed,
)

from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.finetune.audio import (
    AudioCollator,
    AudioFilesArgs,
    as_dataset,
    character_vocabulary,
    check_transcripts,
    ctc_metrics,
    ctc_tokenizer,
    decode_rows,
    file_rows,
)
from hfssl.finetune.common import (
    FinetuneTrainingArguments,
    ModelArgs,
    check_output_dir,
    describe_loading,
    load_model,
    load_pretrained,
    train_and_finish,
)


@dataclass
class TranscriptArgs:
    transcript_column: str = field(default="transcript", metadata={"help": "Transcript column of the data files."})
    lowercase: bool = field(default=True, metadata={"help": "Lower-case the transcripts before building the vocabulary."})
    freeze_feature_encoder: bool = field(default=True, metadata={"help": "Keep the convolutional feature encoder "
                                         "as loaded (wav2vec 2.0's fine-tuning); false trains it too (a fair "
                                         "--from_scratch baseline: a frozen random encoder would handicap it)."})


def main(argv=None) -> dict:
    files, text_args, ft_args, training_args = parse(AudioFilesArgs, TranscriptArgs, ModelArgs,
                                                     FinetuneTrainingArguments, args=argv)
    if not files.train_file:
        raise UserError("recipes/finetune_ctc.py reads --train_file (path,transcript rows), not --data")
    path = ft_args.require_path("the OUTPUT/model folder of recipes/wav2vec2.py")
    check_output_dir(training_args)
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)
    extractor = load_pretrained(AutoFeatureExtractor, path, "feature extractor")

    column = text_args.transcript_column
    norm = (lambda t: " ".join(t.lower().split())) if text_args.lowercase else (lambda t: " ".join(t.split()))
    train_rows = [{**r, column: norm(r[column])} for r in file_rows(files.train_file, [column], files.path_column)]
    vocab = character_vocabulary([r[column] for r in train_rows])
    tokenizer = ctc_tokenizer(vocab)
    processor = Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    held_rows = None
    if files.validation_file:
        held_rows = [{**r, column: norm(r[column])} for r in file_rows(files.validation_file, [column], files.path_column)]
        check_transcripts(held_rows, vocab, column)

    def encode(rows):
        return as_dataset(decode_rows(rows, files.max_seconds), labels=[tokenizer(r[column]).input_ids for r in rows])

    train = encode(train_rows)
    if held_rows:
        held = encode(held_rows)
    elif files.validation_split > 0:
        parts = train.train_test_split(test_size=files.validation_split, seed=training_args.seed)
        train, held = parts["train"], parts["test"]
    else:
        raise UserError("no validation rows: give --validation_file or --validation_split (e.g. 0.1)")
    print(f"CTC: {len(train)} training clips, {len(held)} validation clips, {len(vocab)} tokens: {''.join(vocab)}")

    model, info = load_model(AutoModelForCTC, path, _ctc_config(path, tokenizer), ft_args.from_scratch)
    if text_args.freeze_feature_encoder:
        model.freeze_feature_encoder()  # wav2vec 2.0's fine-tuning: the convolutional encoder stays as pretrained
    print(describe_loading(info, ft_args.from_scratch, head_prefixes=("lm_head.",)))
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=held,
                      data_collator=AudioCollator(extractor, pad_labels=True), processing_class=processor,
                      compute_metrics=ctc_metrics(tokenizer))
    metrics = train_and_finish(trainer)
    if trainer.is_world_process_zero():
        print(f"eval WER {metrics['eval_wer']:.4f}, CER {metrics['eval_cer']:.4f}; pipeline("
              f"'automatic-speech-recognition', model='{training_args.output_dir}') transcribes 16 kHz arrays")
    return metrics


def _ctc_config(path, tokenizer):
    return AutoConfig.from_pretrained(path, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      ctc_loss_reduction="mean", ctc_zero_infinity=True)


if __name__ == "__main__":
    run_cli(main)
