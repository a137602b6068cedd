"""CLIP-style image-text pretraining: an image tower and a text tower trained to match pictures with captions.

    accelerate launch recipes/clip.py [--config FILE.yaml] [--flag value ...]

With no arguments (recipes/configs/clip_tiny.yaml): tiny ViT + BERT towers on the procedural shapes set, whose
held-out pictures show colour-shape combinations never seen in training. ``--data fashion_mnist`` captions the
embedded Fashion-MNIST subset by prompt templates; ``--data PATH`` reads your own pairs. Every evaluation reports
image->text and text->image recall@1/5/10 and median rank over all held-out pairs, and zero-shot accuracy when the
held-out pictures have labels, and draws OUTPUT/retrievals/step-N.png (fixed held-out captions and the images
they retrieve). Rows that cannot be used (no image or caption, a missing or unreadable image, an empty caption) are
skipped, counted and named (all in OUTPUT/skipped_pairs.tsv). Sections: args -> tower checks -> Accelerator ->
pairs (main process first) -> tokenizer -> dual encoder -> fit -> OUTPUT/model (VisionTextDualEncoderModel +
processor + model card), which AutoModel, AutoProcessor and pipeline("zero-shot-image-classification") load as it is.
"""

from dataclasses import asdict
from pathlib import Path

from transformers import VisionTextDualEncoderProcessor

from hfssl.card import ModelCardInfo
from hfssl.checkpoint import run_settings
from hfssl.config import parse
from hfssl.errors import UserError, run_cli
from hfssl.hub import HubArgs, push_if_requested, save_model_folder
from hfssl.methods.clip import (
    TEXT_POSITIONS,
    CLIPArgs,
    CLIPPretrainer,
    build_dual_encoder,
    check_towers,
)
from hfssl.methods.clip_eval import CLIPEvaluator, RetrievalPictures
from hfssl.multimodal.pairs import (
    SKIPPED_FILE,
    PairCollator,
    PairDataArgs,
    load_pairs,
    tokenize_pairs,
    write_skipped,
)
from hfssl.multimodal.vocab import caption_tokenizer
from hfssl.train import TrainArgs, fit, make_accelerator
from hfssl.vision.export import vit_image_processor

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "clip_tiny.yaml"


def main(argv=None) -> dict:
    data_args, clip_args, train_args, hub_args = parse(PairDataArgs, CLIPArgs, TrainArgs, HubArgs, args=argv,
                                                       default_config=DEFAULT_CONFIG)
    if train_args.per_device_train_batch_size < 2:
        raise UserError(f"--per_device_train_batch_size {train_args.per_device_train_batch_size}: a contrastive batch "
                        "of one pair has no negatives; set it to 2 or more")
    vision, text_tokenizer = check_towers(data_args, clip_args)  # before any data work
    settings = run_settings(train_args, data_args, clip_args)
    accelerator = make_accelerator(train_args, settings)
    out = Path(train_args.output_dir)

    with accelerator.main_process_first():
        pairs = load_pairs(data_args, train_args.seed, data_args.image_size)
    if vision is not None and vision.mean is not None:  # a pretrained tower sees pixels as it was trained on
        pairs.mean, pairs.std = vision.mean, vision.std
    accelerator.print(pairs.description)
    if pairs.skipped and accelerator.is_main_process:
        write_skipped(pairs.skipped, out / SKIPPED_FILE)
    tokenizer = text_tokenizer
    if tokenizer is None:  # deterministic: every process and a resume build the same ids from the same captions
        tokenizer = caption_tokenizer(pairs.train["caption"], vocab_size=data_args.vocab_size,
                                      model_max_length=TEXT_POSITIONS)
    train = tokenize_pairs(pairs.train, tokenizer, data_args.max_text_length)
    held_out = tokenize_pairs(pairs.eval, tokenizer, data_args.max_text_length) if pairs.eval is not None else None

    dual, new = build_dual_encoder(clip_args, pairs.image_size, len(tokenizer), tokenizer.pad_token_id)
    model = CLIPPretrainer(dual, clip_args.lock_image_tower, clip_args.lock_text_tower)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    accelerator.print(f"model: {dual.config.vision_config.model_type} + {dual.config.text_config.model_type} dual "
                      f"encoder, {trained / 1e6:.2f}M trained parameters; initialised here: {', '.join(new)}")
    collate = PairCollator(pairs.mean, pairs.std, tokenizer.pad_token_id, pairs.image_size)
    evaluator = None
    if held_out is not None:
        pictures = RetrievalPictures(accelerator, held_out["pixel_values"], held_out["caption"], out)
        evaluator = CLIPEvaluator(held_out, collate, tokenizer, train_args.per_device_eval_batch_size,
                                  label_names=pairs.label_names, templates=data_args.zero_shot_templates,
                                  retrieval=pairs.retrieval, max_length=data_args.max_text_length, pictures=pictures)
    hooks = {} if evaluator is None else {"eval_data": held_out, "eval_step": evaluator.eval_step,
                                          "eval_summary": evaluator.eval_summary,
                                          "before_evaluate": evaluator.before_evaluate}
    result = fit(accelerator, model, train_args, train_data=train, collate_fn=collate,
                 on_step_end=lambda m, step, total: m.step_end(step, total), settings=settings, **hooks)

    metrics = {**result.eval_metrics, "steps": result.step}
    if pairs.skipped:
        metrics["pairs_skipped"] = len(pairs.skipped)
    if accelerator.is_main_process:
        processor = VisionTextDualEncoderProcessor(image_processor=vit_image_processor(pairs.image_size, pairs.mean,
                                                                                        pairs.std), tokenizer=tokenizer)
        card = ModelCardInfo(
            model_name=hub_args.hub_model_id or out.name, method="clip", base_model_type="vision-text-dual-encoder",
            tags=["clip", "image-text", dual.config.vision_config.model_type, dual.config.text_config.model_type],
            pipeline_tag="zero-shot-image-classification", datasets_description=pairs.description,
            hyperparameters={**asdict(data_args), **asdict(clip_args), **asdict(train_args),
                             "image_mean": pairs.mean, "image_std": pairs.std},
            metrics=metrics, report=out / "report.png", usage=usage(hub_args.hub_model_id or str(out / "model")))
        folder = save_model_folder(result.model.model, out / "model", processor=processor, card=card,
                                   overwrite=train_args.overwrite_output_dir or train_args.resume,
                                   secrets=[hub_args.hub_token] if hub_args.hub_token else ())
        print(f"saved the dual encoder to {folder} (AutoModel, AutoProcessor, "
              f"pipeline('zero-shot-image-classification', model='{folder}'))")
        push_if_requested(folder, hub_args)
    return metrics


def usage(name: str) -> str:
    return ("from transformers import AutoModel, AutoProcessor, pipeline\n\n"
            f'classify = pipeline("zero-shot-image-classification", model="{name}")\n'
            'print(classify("picture.png", candidate_labels=["circle", "square"], hypothesis_template="a {}"))\n'
            f'model, processor = AutoModel.from_pretrained("{name}"), AutoProcessor.from_pretrained("{name}")\n'
            'inputs = processor(text=["a red circle"], images=[image], return_tensors="pt", padding=True)\n'
            "image_text_similarity = model(**inputs).logits_per_image")


if __name__ == "__main__":
    run_cli(main)
