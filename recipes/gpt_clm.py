"""Pretrain a GPT-style causal language model (next-token prediction) on raw text.

    accelerate launch recipes/gpt_clm.py [--config FILE.yaml] [--flag value ...]

With no arguments: a tiny GPT-2 on the embedded Jane Austen corpus with a byte-level BPE trained on it.
Sections follow transformers' *_no_trainer.py order: args, Accelerator, seed -> data (main process first) ->
model -> fit -> save a folder AutoModelForCausalLM, pipeline("text-generation") and run_clm.py load as it is.
"""

from dataclasses import asdict
from pathlib import Path

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.gpt import CausalLMPretrainer, check_prompts, clm_eval_step, clm_summary, generate_samples
from hfssl.methods.gpt_config import GPTModelArgs, SampleArgs, folder_config
from hfssl.text.bpe import BPEArgs, get_or_train_bpe, publish_bpe_tokenizer, token_byte_lengths
from hfssl.text.clm import CLMArgs, CLMRowBuilder, collate_rows, format_rows
from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
from hfssl.train import TrainArgs, fit, make_accelerator

# What the recipe runs with no flags: recipes/configs/gpt_tiny.yaml.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "gpt_tiny.yaml"
# ... and with --model_name_or_path but no --config (continued pretraining: the folder defines the model).
CONTINUE_CONFIG = DEFAULT_CONFIG.with_name("gpt_continue.yaml")


def main(argv=None):
    corpus_args, tok_args, clm_args, model_args, sample_args, train_args, hub_args, split_args = parse(
        CorpusArgs, BPEArgs, CLMArgs, GPTModelArgs, SampleArgs, TrainArgs, HubArgs, EvalSplitArgs,
        args=argv, default_config=DEFAULT_CONFIG, continue_config=CONTINUE_CONFIG)
    # Continued pretraining: the folder's config is read and checked before any data work.
    base = folder_config(model_args) if model_args.model_name_or_path else None
    positions = base.max_position_embeddings if base else model_args.positions
    if clm_args.max_seq_length > positions:
        raise UserError(f"--max_seq_length {clm_args.max_seq_length} is longer than the model's {positions} positions "
                        f"({'of --model_name_or_path' if base else '--n_positions'}); lower it")
    settings = run_settings(train_args, corpus_args, tok_args, clm_args, model_args, split_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    # Data: documents -> held-out split by document -> byte-level BPE (trained on the training split, cached with
    # the corpus, saved once into OUTPUT/tokenizer and reused on --resume) -> rows packed full, eos between documents.
    with accelerator.main_process_first():
        documents, report = load_corpus(corpus_args)
        accelerator.print(report)
        split = split_documents(documents, split_args, seed=train_args.seed)
        saved_tokenizer = out / "tokenizer"
        tokenizer = get_or_train_bpe(tok_args, split["train"], positions, log=accelerator.print,
                                     reuse=saved_tokenizer if saved_tokenizer.is_dir() else model_args.model_name_or_path)
        if base is not None and len(tokenizer) > base.vocab_size:
            raise UserError(f"the tokenizer has {len(tokenizer)} tokens but --model_name_or_path has {base.vocab_size} "
                            "embeddings; use the folder's own tokenizer (leave --tokenizer_name_or_path unset)")
        check_prompts(tokenizer, sample_args.prompts, sample_args.sample_new_tokens, positions)  # before training
        if accelerator.is_main_process and not saved_tokenizer.is_dir():
            publish_bpe_tokenizer(tokenizer, saved_tokenizer)
        train_rows = CLMRowBuilder.from_documents(split["train"], tokenizer, clm_args, seed=train_args.seed,
                                                  name="training split" if split["test"] else "corpus")
        eval_rows = split["test"] and CLMRowBuilder.from_documents(
            split["test"], tokenizer, clm_args, seed=train_args.seed + 1, name="held-out split").for_epoch(0)
        accelerator.print(f"train: {format_rows(train_rows.for_epoch(0), clm_args.max_seq_length)}; "
                          f"{train_rows.corpus_stats()}")
    if eval_rows is not None:
        accelerator.print(f"eval:  {format_rows(eval_rows, clm_args.max_seq_length)}")

    if base is None:
        model = CausalLMPretrainer.from_args(model_args, len(tokenizer), tokenizer.eos_token_id)
        source = f"{model_args.architecture or 'gpt2'} {model_args.preset or 'tiny'} from scratch"
    else:
        model, new = CausalLMPretrainer.from_folder(model_args.model_name_or_path, base)
        source = f"{model_args.model_name_or_path}, initialised (not in the folder): {', '.join(new) or 'none'}"
    accelerator.print(f"model: {source}; {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                      f"vocabulary {len(tokenizer)}, {positions} positions")

    result = fit(accelerator, model, train_args, train_data=train_rows.for_epoch, draw_ahead=train_rows.draw_ahead,
                 collate_fn=collate_rows, eval_data=eval_rows, eval_step=clm_eval_step(token_byte_lengths(tokenizer)),
                 eval_summary=clm_summary, settings=settings)

    if accelerator.is_main_process:
        export = result.model.model
        if export.config.pad_token_id is None:  # unset while training; sequence classifiers find the last token by it
            export.config.pad_token_id = export.generation_config.pad_token_id = tokenizer.pad_token_id
        samples = generate_samples(export, tokenizer, sample_args.prompts, sample_args.sample_new_tokens)
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method="gpt-clm", base_model_type=export.config.model_type,
            tags=[export.config.model_type, "text-generation", "causal-lm", "pretraining"],
            pipeline_tag="text-generation",
            datasets_description=f"{corpus_args.corpus or 'embedded Jane Austen novels (public domain)'}; {report}",
            hyperparameters={**asdict(model_args), **asdict(tok_args), **asdict(clm_args), **asdict(train_args),
                             "vocab_size": len(tokenizer)},
            metrics={**result.eval_metrics, "steps": result.step}, report=out / "report.png", samples=samples)
        folder = save_model_folder(export, out / "model", tokenizer=tokenizer, card=card,
                                   overwrite=train_args.overwrite_output_dir or train_args.resume,
                                   secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the pretrained model to {folder} (load it with AutoModelForCausalLM.from_pretrained('{folder}') "
              f"or pipeline('text-generation', model='{folder}'))")
        push_if_requested(folder, hub_args)


if __name__ == "__main__":
    run_cli(main)
