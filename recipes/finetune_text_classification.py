"""Fine-tune a pretrained encoder for text (or text-pair) classification with the standard ``Trainer``.

    python recipes/finetune_text_classification.py --model_name_or_path runs/bert/model \
        --train_file train.jsonl --validation_file dev.jsonl --output_dir runs/cls [--config FILE.yaml]

Data: .csv / .tsv / .jsonl / .parquet with a text column (and optionally a second one for pairs) and a
label column of strings or integers. The saved folder runs in ``pipeline("text-classification", model=DIR)``
and returns the label names. ``--from_scratch`` trains the same architecture from random weights.
"""

from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, Trainer, set_seed

from hfssl.config import parse
from hfssl.errors import run_cli
from hfssl.finetune.common import (
    DataFilesArgs,
    FinetuneTrainingArguments,
    ModelArgs,
    check_output_dir,
    describe_loading,
    effective_max_length,
    load_model,
    load_pretrained,
    train_and_finish,
)
from hfssl.finetune.metrics import classification_metrics
from hfssl.finetune.text_classification import (
    TextClassificationArgs,
    encode_classification,
    load_classification_data,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune_text_classification.yaml"


def main(argv=None) -> dict:
    """Run the recipe; returns the final evaluation metrics (eval_accuracy, eval_f1 = macro-F1, eval_loss)."""
    model_args, files, task, training_args = parse(
        ModelArgs, DataFilesArgs, TextClassificationArgs, FinetuneTrainingArguments, args=argv, default_config=DEFAULT_CONFIG)
    path = model_args.require_path("the OUTPUT/model folder of recipes/bert_mlm.py")
    check_output_dir(training_args)
    set_seed(training_args.seed)  # before the head (or the whole model) is initialised

    # Data: every row is checked (columns, empty texts, labels) before anything is trained.
    with training_args.main_process_first(desc="load data"):
        raw, labels = load_classification_data(files, task, training_args.seed)
    print(f"data: {len(raw['train'])} training rows, {len(raw['validation'])} validation rows, "
          f"{len(labels)} labels: {', '.join(labels)}")

    # Model: the label names go into the config, so pipelines and the Hub widget show them.
    tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer")
    config = load_pretrained(AutoConfig, path, "config", num_labels=len(labels), id2label=dict(enumerate(labels)),
                             label2id={name: i for i, name in enumerate(labels)})
    model, info = load_model(AutoModelForSequenceClassification, path, config, model_args.from_scratch)
    # the task head: "classifier." (BERT, ELECTRA), "score." (the last-token head of GPT-2 / Llama)
    print(describe_loading(info, model_args.from_scratch, head_prefixes=("classifier.", "score.")))

    max_length = effective_max_length(task.max_seq_length, tokenizer, config)
    with training_args.main_process_first(desc="tokenize"):
        encoded = {split: encode_classification(ds, tokenizer, task, config.label2id, max_length)
                   for split, ds in raw.items()}

    # Train with the stock Trainer: dynamic padding (DataCollatorWithPadding), AdamW, linear warmup/decay.
    trainer = Trainer(model=model, args=training_args, train_dataset=encoded["train"],
                      eval_dataset=encoded["validation"], processing_class=tokenizer,
                      compute_metrics=classification_metrics())
    return train_and_finish(trainer)


if __name__ == "__main__":
    run_cli(main)
