"""Pretrain BERT (masked language model + next sentence prediction) on raw text.

    accelerate launch recipes/bert_mlm.py [--config FILE.yaml] [--flag value ...]

With no arguments: a tiny BERT on the embedded Jane Austen corpus, a few minutes on a CPU.
Sections follow transformers' *_no_trainer.py order: args, Accelerator, seed -> data (main process
first) -> collator -> model -> fit -> save a folder every Auto* class loads (-> optional Hub upload).
"""

from dataclasses import asdict
from pathlib import Path

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.bert import BertPretrainer, mlm_eval_step, mlm_summary, premask
from hfssl.methods.bert_config import BertModelArgs, folder_config
from hfssl.text.cls_check import check_cls_state
from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
from hfssl.text.epochs import InstanceBuilder
from hfssl.text.masking import MaskingArgs, MLMCollator
from hfssl.text.nsp import NSPArgs, format_stats
from hfssl.text.tokenizer import TokenizerArgs, get_or_train_tokenizer, save_tokenizer
from hfssl.train import TrainArgs, fit, make_accelerator

# What the recipe runs with no flags: recipes/configs/bert_tiny.yaml (its comments say why each value).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "bert_tiny.yaml"
# ... and with --model_name_or_path but no --config (continued pretraining: the folder defines the model).
CONTINUE_CONFIG = DEFAULT_CONFIG.with_name("bert_continue.yaml")
MLM_ONLY_NOTE = ("**Fine-tuning note:** pretrained with MLM only, so no loss trained the `[CLS]` state or the "
                 "pooler that `AutoModelForSequenceClassification` classifies from. Search the fine-tuning learning "
                 "rate up to 2e-3 - 3e-3 for a small model (it re-routes `[CLS]`; measured in hfssl's "
                 "docs/results.md, 'Transfer to tasks unlike topic classification'), or pretrain with `--nsp true`.")


def main(argv=None):
    corpus_args, tok_args, nsp_args, mask_args, model_args, train_args, hub_args, split_args = parse(
        CorpusArgs, TokenizerArgs, NSPArgs, MaskingArgs, BertModelArgs, TrainArgs, HubArgs, EvalSplitArgs,
        args=argv, default_config=DEFAULT_CONFIG, continue_config=CONTINUE_CONFIG)
    # Continued pretraining: the folder's config is read and checked before any data work.
    base = folder_config(model_args) if model_args.model_name_or_path else None
    positions = base.max_position_embeddings if base else model_args.positions
    if nsp_args.max_seq_length > positions:
        raise UserError(f"--max_seq_length {nsp_args.max_seq_length} is longer than the model's {positions} positions "
                        f"({'of --model_name_or_path' if base else '--max_position_embeddings'}); lower it")
    settings = run_settings(train_args, corpus_args, tok_args, nsp_args, mask_args, model_args, split_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    # Data: documents -> held-out split by document -> tokenizer (trained on the training split only,
    # saved once by the main process and reused by the others and on --resume) -> sentence pairs.
    with accelerator.main_process_first():
        documents, report = load_corpus(corpus_args)
        accelerator.print(report)
        split = split_documents(documents, split_args, seed=train_args.seed)
        saved_tokenizer = out / "tokenizer"
        tokenizer = get_or_train_tokenizer(
            tok_args, split["train"], tok_args.model_max_length or positions, log=accelerator.print,
            reuse=saved_tokenizer if saved_tokenizer.is_dir() else model_args.model_name_or_path)
        if base is not None and len(tokenizer) != base.vocab_size:
            raise UserError(f"the tokenizer has {len(tokenizer)} tokens but --model_name_or_path has {base.vocab_size} "
                            "embeddings; use the folder's own tokenizer (leave --tokenizer_name_or_path unset)")
        if accelerator.is_main_process and not saved_tokenizer.is_dir():
            save_tokenizer(tokenizer, saved_tokenizer)
        train_pairs = InstanceBuilder.from_documents(split["train"], tokenizer, nsp_args, seed=train_args.seed,
                                                     name="training split" if split["test"] else "corpus")
        eval_instances = split["test"] and InstanceBuilder.from_documents(
            split["test"], tokenizer, nsp_args, seed=train_args.seed + 1, name="held-out split").for_epoch(0)
        accelerator.print(f"train: {format_stats(train_pairs.stats(train_pairs.for_epoch(0)))}; "
                          f"{train_pairs.corpus_stats()}")
    if eval_instances is not None:
        accelerator.print(f"eval:  {format_stats(train_pairs.stats(eval_instances))}")

    # Padding happens in the loader; masking happens in the loop with a per-step generator (exact resume).
    collator = MLMCollator.from_args(tokenizer, mask_args)
    if eval_instances is not None:
        with accelerator.main_process_first():
            eval_instances = premask(eval_instances, collator, seed=train_args.seed)
    objective = dict(nsp=nsp_args.nsp, cls_bow_weight=nsp_args.cls_bow_weight, special_ids=tokenizer.all_special_ids)
    if base is None:
        model = BertPretrainer.from_args(model_args, len(tokenizer), tokenizer.pad_token_id, **objective)
        source = f"{model_args.preset or 'tiny'} from scratch"
    else:
        model, new = BertPretrainer.from_folder(model_args.model_name_or_path, base, **objective)
        source = f"{model_args.model_name_or_path}, initialised (not in the folder): {', '.join(new) or 'none'}"
    accelerator.print(f"model: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                      f"vocabulary {len(tokenizer)}, {positions} positions")

    result = fit(accelerator, model, train_args, train_data=train_pairs.for_epoch, draw_ahead=train_pairs.draw_ahead,
                 collate_fn=collator.pad, transform=collator.mask, eval_data=eval_instances, eval_step=mlm_eval_step(),
                 eval_summary=mlm_summary, settings=settings)

    if accelerator.is_main_process:
        export = result.model.model
        bow, rows = nsp_args.cls_bow_weight, eval_instances if eval_instances is not None else train_pairs.for_epoch(0)
        cls = check_cls_state(export, rows, held_out=eval_instances is not None,  # before the export
                              hint=(f"--cls_bow_weight above {bow:g}" if bow else "--cls_bow_weight 1")
                              + ("" if nsp_args.nsp else " or --nsp true") + ", or a longer run")
        if cls is not None:
            print(cls.message(out / "model"))
        notes = [n for n in (None if nsp_args.nsp or bow else MLM_ONLY_NOTE, cls and cls.note) if n]
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name,
            method=("bert-mlm-nsp" if nsp_args.nsp else "bert-mlm") + ("-cls-bow" if nsp_args.cls_bow_weight else ""),
            base_model_type="bert", tags=["bert", "fill-mask", "pretraining"], pipeline_tag="fill-mask",
            datasets_description=f"{corpus_args.corpus or 'embedded Jane Austen novels (public domain)'}; {report}",
            hyperparameters={**asdict(model_args), **asdict(nsp_args), **asdict(mask_args), **asdict(train_args),
                             "vocab_size": len(tokenizer)},
            metrics={**result.eval_metrics, "steps": result.step}, report=out / "report.png",
            notes="\n\n".join(notes) or None)
        if model_args.finetune_dropout is not None:  # the config fine-tuning starts from (training is over)
            export.config.hidden_dropout_prob = export.config.attention_probs_dropout_prob = model_args.finetune_dropout
        folder = save_model_folder(export, out / "model", tokenizer=tokenizer, card=card,
                                   overwrite=train_args.overwrite_output_dir or train_args.resume,
                                   secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained model to {folder} (load it with AutoModelForMaskedLM / "
              f"AutoModelForSequenceClassification.from_pretrained('{folder}'))")
        push_if_requested(folder, hub_args)


if __name__ == "__main__":
    run_cli(main)
