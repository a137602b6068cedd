"""Fine-tune a pretrained encoder for extractive question answering (SQuAD layout) with the standard ``Trainer``.

    python recipes/finetune_qa.py --model_name_or_path runs/bert/model \
        --train_file train.jsonl --validation_file dev.jsonl --output_dir runs/qa [--config FILE.yaml]

Rows: ``{"id", "title"?, "context", "question", "answers": {"text": [...], "answer_start": [...]}}``.
Long contexts are split into windows of ``--max_seq_length`` tokens overlapping by ``--doc_stride``;
evaluation reports SQuAD v1.1 exact match and F1. transformers 5 has no question-answering pipeline:
use ``hfssl.finetune.qa.QuestionAnswerer.from_pretrained(DIR)(question=..., context=...)``.
"""

from pathlib import Path

from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer, Trainer, set_seed

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
from hfssl.finetune.qa import QAArgs, drop_unfit_questions, featurize, load_qa_data, model_inputs, qa_metrics

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune_qa.yaml"


def main(argv=None) -> dict:
    """Run the recipe; returns the final evaluation metrics (eval_exact_match, eval_f1 in 0-100, eval_loss)."""
    model_args, files, qa, training_args = parse(ModelArgs, DataFilesArgs, QAArgs, FinetuneTrainingArguments,
                                                 args=argv, default_config=DEFAULT_CONFIG)
    path = model_args.require_path("the OUTPUT/model folder of recipes/bert_mlm.py")
    check_output_dir(training_args)
    set_seed(training_args.seed)  # before the head (or the whole model) is initialised

    tokenizer = load_pretrained(AutoTokenizer, path, "tokenizer")
    config = load_pretrained(AutoConfig, path, "config")
    max_length = effective_max_length(qa.max_seq_length, tokenizer, config)

    # Data: every row is checked (fields, answer spans, question length) before anything is trained. A
    # training question whose answer fits in no window is dropped (its windows would teach "no answer"),
    # counted and named; evaluation questions are all kept and scored.
    with training_args.main_process_first(desc="load data"):
        raw = load_qa_data(files, tokenizer, qa, max_length, training_args.seed)
        features = {split: featurize(ds, tokenizer, max_length, qa.doc_stride) for split, ds in raw.items()}
        notes = {}
        for split, name, where in (("train", "training", files.train_file),
                                   ("validation", "validation", files.validation_file or files.train_file)):
            features[split], notes[split] = drop_unfit_questions(raw[split], features[split], max_length,
                                                                 qa.doc_stride, where, split=name)
    for note in notes.values():
        if note:
            print(note, flush=True)
    used = len(set(features["train"]["example_idx"]))
    print(f"data: {used} of {len(raw['train'])} training questions -> {len(features['train'])} windows, "
          f"{len(raw['validation'])} validation questions -> {len(features['validation'])} windows "
          f"(max_seq_length {max_length}, doc_stride {qa.doc_stride})")

    model, info = load_model(AutoModelForQuestionAnswering, path, config, model_args.from_scratch)
    print(describe_loading(info, model_args.from_scratch, head_prefixes=("qa_outputs.",)))

    # Evaluation windows carry start/end labels too (eval loss); compute_metrics maps the logits back to
    # answer text over all windows of each question and scores them with SQuAD v1.1 EM / F1.
    trainer = Trainer(model=model, args=training_args, train_dataset=model_inputs(features["train"]),
                      eval_dataset=model_inputs(features["validation"]), processing_class=tokenizer,
                      compute_metrics=qa_metrics(raw["validation"], features["validation"], qa))
    return train_and_finish(trainer)


if __name__ == "__main__":
    run_cli(main)
