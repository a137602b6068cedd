"""Pretrain ELECTRA (replaced token detection, Clark et al. 2020, https://arxiv.org/abs/2003.10555) on raw text.

    accelerate launch recipes/electra.py [--config FILE.yaml] [--flag value ...]

With no arguments: a tiny ELECTRA on the embedded Jane Austen corpus. Sections as recipes/bert_mlm.py: args,
Accelerator, seed -> data (main process first) -> masking transform -> model -> fit -> OUTPUT/model (the
discriminator, for fine-tuning) and OUTPUT/generator (a fill-mask model). --cls_bow_weight (1.0 in electra_tiny.yaml)
adds BERT's [CLS] bag-of-words loss on the discriminator's [CLS] state; before the export the [CLS] state is checked
on up to 256 held-out rows (hfssl.text.cls_check: a warning and a card note when it is (near) constant).
"""

from dataclasses import asdict
from pathlib import Path

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.bert import premask
from hfssl.methods.electra import (
    ElectraPretrainer,
    add_sample_noise,
    electra_eval_step,
    electra_summary,
    electra_transform,
    pad_with_noise,
)
from hfssl.methods.electra_config import ElectraModelArgs, refuse_folder
from hfssl.text.cls_check import check_cls_state
from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
from hfssl.text.epochs import InstanceBuilder
from hfssl.text.masking import MaskingArgs, MLMCollator
from hfssl.text.nsp import NSPArgs, format_stats
from hfssl.text.tokenizer import TokenizerArgs, get_or_train_tokenizer, save_tokenizer
from hfssl.train import TrainArgs, fit, make_accelerator

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "electra_tiny.yaml"


def main(argv=None):
    corpus_args, tok_args, nsp_args, mask_args, model_args, train_args, hub_args, split_args = parse(
        CorpusArgs, TokenizerArgs, NSPArgs, MaskingArgs, ElectraModelArgs, TrainArgs, HubArgs, EvalSplitArgs,
        args=argv, default_config=DEFAULT_CONFIG)
    refuse_folder(model_args.model_name_or_path)
    if nsp_args.nsp:
        raise UserError("--nsp true: ELECTRA has no next-sentence task; set --nsp false (packed MLM rows)")
    if nsp_args.max_seq_length > model_args.positions:
        raise UserError(f"--max_seq_length {nsp_args.max_seq_length} is longer than the model's "
                        f"{model_args.positions} positions (--max_position_embeddings); lower it")
    settings = run_settings(train_args, corpus_args, tok_args, nsp_args, mask_args, model_args, split_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    # Data: documents -> held-out split by document -> tokenizer (saved once, reused) -> packed rows.
    with accelerator.main_process_first():
        documents, report = load_corpus(corpus_args)
        accelerator.print(report)
        split = split_documents(documents, split_args, seed=train_args.seed)
        saved_tokenizer = out / "tokenizer"
        tokenizer = get_or_train_tokenizer(
            tok_args, split["train"], tok_args.model_max_length or model_args.positions, log=accelerator.print,
            reuse=saved_tokenizer if saved_tokenizer.is_dir() else None)
        if accelerator.is_main_process and not saved_tokenizer.is_dir():
            save_tokenizer(tokenizer, saved_tokenizer)
        train_rows = InstanceBuilder.from_documents(split["train"], tokenizer, nsp_args, seed=train_args.seed,
                                                    name="training split" if split["test"] else "corpus")
        eval_rows = split["test"] and InstanceBuilder.from_documents(
            split["test"], tokenizer, nsp_args, seed=train_args.seed + 1, name="held-out split").for_epoch(0)
        accelerator.print(f"train: {format_stats(train_rows.stats(train_rows.for_epoch(0)))}; "
                          f"{train_rows.corpus_stats()}")

    # Padding in the loader; masking + the generator's sampling noise in the loop, seeded by the step. The
    # held-out rows get both once, so every evaluation (and process count) scores the same replacements.
    collator = MLMCollator.from_args(tokenizer, mask_args)
    if eval_rows is not None:
        with accelerator.main_process_first():
            eval_rows = add_sample_noise(premask(eval_rows, collator, seed=train_args.seed), seed=train_args.seed)
    model = ElectraPretrainer.from_args(model_args, len(tokenizer), tokenizer.pad_token_id,
                                        cls_bow_weight=nsp_args.cls_bow_weight, special_ids=tokenizer.all_special_ids)
    gen = model.generator.config
    accelerator.print(f"model: ELECTRA {model_args.preset or 'tiny'} from scratch, generator hidden {gen.hidden_size} "
                      f"({gen.num_attention_heads} heads), [CLS] bag-of-words weight {nsp_args.cls_bow_weight:g}; "
                      f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}")

    result = fit(accelerator, model, train_args, train_data=train_rows.for_epoch, draw_ahead=train_rows.draw_ahead,
                 collate_fn=pad_with_noise(collator.pad),
                 transform=electra_transform(collator.mask), eval_data=eval_rows, eval_step=electra_eval_step(),
                 eval_summary=electra_summary, settings=settings)

    if accelerator.is_main_process:
        hyperparameters = {**asdict(model_args), **asdict(nsp_args), **asdict(mask_args), **asdict(train_args),
                           "vocab_size": len(tokenizer)}
        bow, rows = nsp_args.cls_bow_weight, eval_rows if eval_rows is not None else train_rows.for_epoch(0)
        cls = check_cls_state(result.model.discriminator, rows, held_out=eval_rows is not None,  # before the export
                              hint=f"--cls_bow_weight above {bow:g}, or a longer run" if bow else "--cls_bow_weight 1")
        if cls is not None:
            print(cls.message(out / "model"))
        folders, usage = {}, {  # the card's snippet: what each folder is for
            "model": "from transformers import AutoModelForSequenceClassification\n"
                     "classifier = AutoModelForSequenceClassification.from_pretrained('{}', num_labels=2)",
            "generator": "from transformers import pipeline\nfill = pipeline('fill-mask', model='{}')"}
        for name, export, tag in (("model", result.model.discriminator, None),
                                  ("generator", result.model.generator, "fill-mask")):
            if model_args.finetune_dropout is not None:  # the config fine-tuning starts from (training is over)
                export.config.hidden_dropout_prob = model_args.finetune_dropout
                export.config.attention_probs_dropout_prob = model_args.finetune_dropout
            model_name = (hub_args.hub_model_id or out.name) + ("" if name == "model" else "-generator")
            card = ModelCardInfo(
                model_name=model_name, usage=usage[name].format(model_name),
                method="electra-cls-bow" if bow else "electra", base_model_type="electra",
                tags=["electra", "pretraining", name],
                pipeline_tag=tag, hyperparameters=hyperparameters,
                datasets_description=f"{corpus_args.corpus or 'embedded Jane Austen novels (public domain)'}; {report}",
                metrics={**result.eval_metrics, "steps": result.step}, report=out / "report.png",
                notes=cls.note if cls is not None and name == "model" else None)
            folders[name] = save_model_folder(export, out / name, tokenizer=tokenizer, card=card,
                                              overwrite=train_args.overwrite_output_dir or train_args.resume,
                                              secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained discriminator to {folders['model']} (fine-tune it with "
              f"AutoModelForSequenceClassification.from_pretrained('{folders['model']}')) and the generator to "
              f"{folders['generator']} (pipeline('fill-mask'))")
        push_if_requested(folders["model"], hub_args)


if __name__ == "__main__":
    run_cli(main)
