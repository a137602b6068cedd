"""Fine-tune a speech classifier (keywords, commands, speakers) with transformers' Trainer.

    python recipes/finetune_audio_classification.py --model_name_or_path runs/wav2vec2_tiny/model \
        --output_dir runs/kws (--data FOLDER_OF_CLASS_FOLDERS | --train_file train.csv --validation_file test.csv)

The clips (any rate, channels and wav / flac / ogg / mp3) are decoded to 16 kHz mono and normalised by the model
folder's feature extractor, as pipeline("audio-classification", model=OUTPUT_DIR) does with the saved model.
--from_scratch keeps the architecture with random weights: the baseline a pretraining gain is measured against.
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, Trainer, set_seed

from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.finetune.audio import (
    AudioCollator,
    AudioFilesArgs,
    as_dataset,
    decode_rows,
    file_rows,
    folder_rows,
)
from hfssl.finetune.common import (
    FinetuneTrainingArguments,
    ModelArgs,
    check_known_labels,
    check_output_dir,
    describe_loading,
    label_names,
    load_model,
    load_pretrained,
    train_and_finish,
)
from hfssl.finetune.metrics import classification_metrics


@dataclass
class LabelArgs:
    label_column: str = field(default="label", metadata={"help": "Label column of --train_file."})


def main(argv=None) -> dict:
    files, label_args, ft_args, training_args = parse(AudioFilesArgs, LabelArgs, ModelArgs, FinetuneTrainingArguments,
                                                      args=argv)
    path = ft_args.require_path("the OUTPUT/model folder of recipes/wav2vec2.py")
    check_output_dir(training_args)
    training_args.remove_unused_columns = False
    set_seed(training_args.seed)
    extractor = load_pretrained(AutoFeatureExtractor, path, "feature extractor")

    if files.data:
        train_rows, held_rows = folder_rows(Path(files.data).expanduser())
        where = files.data
    else:
        column = label_args.label_column
        train_rows = [{**r, "label": r[column]} for r in file_rows(files.train_file, [column], files.path_column)]
        held_rows = files.validation_file and [{**r, "label": r[column]} for r in
                                               file_rows(files.validation_file, [column], files.path_column)]
        where = files.train_file
    names = label_names([r["label"] for r in train_rows])
    if len(names) < 2:
        raise UserError(f"the training clips of {where} have one class, {names[0]!r}; classification needs at least "
                        "two: add clips of another class")
    ids = {n: i for i, n in enumerate(names)}
    train = as_dataset(decode_rows(train_rows, files.max_seconds), labels=[ids[r["label"]] for r in train_rows])
    if held_rows:
        check_known_labels([r["label"] for r in held_rows], names, files.validation_file or where, "label")
        held = as_dataset(decode_rows(held_rows, files.max_seconds), labels=[ids[r["label"]] for r in held_rows])
    elif files.validation_split > 0:
        parts = train.train_test_split(test_size=files.validation_split, seed=training_args.seed)
        train, held = parts["train"], parts["test"]
    else:
        raise UserError(f"no validation clips for {where}: give --validation_file, a test/ folder, or "
                        "--validation_split (e.g. 0.1)")
    print(f"audio classification: {len(train)} training clips, {len(held)} validation clips, classes {names}")

    config = AutoConfig.from_pretrained(path, num_labels=len(names), id2label=dict(enumerate(names)), label2id=ids)
    model, info = load_model(AutoModelForAudioClassification, path, config, ft_args.from_scratch)
    print(describe_loading(info, ft_args.from_scratch, head_prefixes=("classifier.", "projector.")))
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=held,
                      data_collator=AudioCollator(extractor), processing_class=extractor,
                      compute_metrics=classification_metrics())
    metrics = train_and_finish(trainer)
    if trainer.is_world_process_zero():
        print(f"eval accuracy {metrics['eval_accuracy']:.4f}; "
              f"pipeline('audio-classification', model='{training_args.output_dir}') runs it on 16 kHz arrays")
    return metrics


if __name__ == "__main__":
    run_cli(main)
