"""Diagnostics for ELECTRA's plateau: data exactly as recipes/electra.py builds it, a loop like hfssl.train.fit
(same AdamW groups, scheduler, step generators), with clipping variants, per-part pre-clip gradient norms, a
discriminator trained alone against drawn replacements (--disc_only uniform | unigram | dup), and generator
sharing variants (--tie bottom | all, --gdes). Arguments it does not know go to the recipe's parser, e.g.

    python benchmarks/diagnostics/electra_diag.py --clip separate --steps 2000 --eval_every 500 --out /tmp/B.jsonl \
        --corpus /tmp/gain/pretrain_corpus --tokenizer_name_or_path /tmp/gain/electra/tokenizer

Results and commands: docs/results.md, "ELECTRA against BERT at equal time".
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from accelerate import Accelerator

from hfssl.config import parse
from hfssl.methods.bert import init_sinusoidal_positions, premask
from hfssl.methods.electra import (
    ElectraPretrainer,
    add_sample_noise,
    electra_eval_step,
    electra_summary,
    electra_transform,
    pad_with_noise,
    replace_tokens,
    replaced_token_loss,
    sample_replacements,
)
from hfssl.methods.electra_config import ElectraModelArgs
from hfssl.optim import build_optimizer, build_scheduler
from hfssl.text.corpus import CorpusArgs, EvalSplitArgs, load_corpus, split_documents
from hfssl.text.epochs import InstanceBuilder
from hfssl.text.masking import MaskingArgs, MLMCollator
from hfssl.text.nsp import NSPArgs
from hfssl.text.tokenizer import TokenizerArgs, get_or_train_tokenizer
from hfssl.train import TrainArgs, evaluate, make_loader, step_generator

p = argparse.ArgumentParser()
p.add_argument("--clip", default="global", choices=["global", "separate", "none"])
p.add_argument("--steps", type=int, default=500)
p.add_argument("--eval_every", type=int, default=250)
p.add_argument("--log_every", type=int, default=50)
p.add_argument("--disc_only", default=None, choices=[None, "uniform", "unigram", "dup"])
p.add_argument("--out", default=None)
p.add_argument("--sin", type=float, default=0.0)
p.add_argument("--qk_std", type=float, default=0.0)
p.add_argument("--tie", default=None, choices=[None, "all", "bottom"])
p.add_argument("--gdes", action="store_true",
               help="DeBERTa-v3's gradient-disentangled embedding sharing: the discriminator reads the shared token "
                    "table without gradient plus its own zero-initialised residual table")
a, rest = p.parse_known_args()
a.recipe_args = rest

CORPUS = ["--document_separator", r"^\s*(?:CHAPTER|Chapter)\s+(?:[IVXLC]+|\d+)\b"]  # Austen's chapters
corpus_args, tok_args, nsp_args, mask_args, model_args, train_args, split_args = parse(
    CorpusArgs, TokenizerArgs, NSPArgs, MaskingArgs, ElectraModelArgs, TrainArgs, EvalSplitArgs,
    args=CORPUS + a.recipe_args, default_config=ROOT / "recipes/configs/electra_tiny.yaml")
torch.manual_seed(train_args.seed)
documents, report = load_corpus(corpus_args)
split = split_documents(documents, split_args, seed=train_args.seed)
tokenizer = get_or_train_tokenizer(tok_args, split["train"], model_args.positions, log=print)
train_rows = InstanceBuilder.from_documents(split["train"], tokenizer, nsp_args, seed=train_args.seed, name="train")
eval_rows = InstanceBuilder.from_documents(split["test"], tokenizer, nsp_args, seed=train_args.seed + 1, name="eval").for_epoch(0)
collator = MLMCollator.from_args(tokenizer, mask_args)
eval_rows = add_sample_noise(premask(eval_rows, collator, seed=train_args.seed), seed=train_args.seed)
torch.manual_seed(train_args.seed)
if a.tie is None:
    model = ElectraPretrainer.from_args(model_args, len(tokenizer), tokenizer.pad_token_id)
else:
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    from hfssl.methods.electra_config import electra_configs
    dc, gc = electra_configs(model_args, len(tokenizer), tokenizer.pad_token_id)
    import copy
    gc = copy.deepcopy(dc)
    if a.tie == "bottom":
        gc.num_hidden_layers = 1
    disc, gen = ElectraForPreTraining(dc), ElectraForMaskedLM(gc)
    model = ElectraPretrainer(disc, gen, model_args.disc_weight)
    if a.tie == "all":
        gen.electra = disc.electra
    else:
        gen.electra.encoder.layer[0] = disc.electra.encoder.layer[0]
    print("tied:", a.tie, "gen layers", gc.num_hidden_layers)
if a.sin > 0:
    init_sinusoidal_positions(model.discriminator.electra.embeddings.position_embeddings, a.sin)
if a.qk_std > 0:
    for mod in list(model.discriminator.electra.encoder.layer) + list(model.generator.electra.encoder.layer):
        for lin in (mod.attention.self.query, mod.attention.self.key):
            torch.nn.init.normal_(lin.weight, std=a.qk_std)
assert model.generator.electra.embeddings is model.discriminator.electra.embeddings
if a.gdes:
    import torch.nn.functional as F

    shared = model.discriminator.electra.embeddings.word_embeddings
    model.register_parameter("gdes_delta", torch.nn.Parameter(torch.zeros_like(shared.weight)))

    def forward_discriminator(replaced, attention_mask, token_type_ids, disc_labels, return_hidden=False):
        inputs = F.embedding(replaced, shared.weight.detach() + model.gdes_delta)  # (B, T, E)
        hidden = model.discriminator.electra(inputs_embeds=inputs, attention_mask=attention_mask,
                                             token_type_ids=token_type_ids, return_dict=True).last_hidden_state
        logits = model.discriminator.discriminator_predictions(hidden).float()  # (B, T)
        return (*replaced_token_loss(logits, disc_labels, attention_mask), logits, *((hidden,) if return_hidden else ()))

    model.forward_discriminator = forward_discriminator
opt = build_optimizer(model, train_args.learning_rate, train_args.weight_decay,
                      (train_args.adam_beta1, train_args.adam_beta2), train_args.adam_epsilon)
sched = build_scheduler(opt, train_args.lr_scheduler_type, train_args.warmup, train_args.max_steps)
acc = Accelerator(cpu=True)
eval_loader = make_loader(eval_rows, 64, pad_with_noise(collator.pad), train_args, None)
transform = electra_transform(collator.mask)

gen_params = [p for n, p in model.named_parameters() if n.startswith("generator.")]  # embeddings are listed under discriminator
emb_params = list(model.discriminator.electra.embeddings.parameters())
disc_params = [p for n, p in model.named_parameters() if n.startswith("discriminator.") and not n.startswith("discriminator.electra.embeddings")]
allp = [p for p in model.parameters()]
print("params: gen", sum(p.numel() for p in gen_params), "emb", sum(p.numel() for p in emb_params),
      "disc", sum(p.numel() for p in disc_params), "total unique", sum(p.numel() for p in allp))
freq = torch.zeros(len(tokenizer))

def norms(grads, groups):
    return [math.sqrt(sum(float(g.pow(2).sum()) for p, g in grads.items() if any(p is q for q in grp) and g is not None)) for grp in groups]

def grads_of(loss):
    gs = torch.autograd.grad(loss, allp, retain_graph=True, allow_unused=True)
    return {p: (g if g is not None else torch.zeros_like(p)) for p, g in zip(allp, gs)}

def clip_(gs, maxn):
    tot = math.sqrt(sum(float(g.pow(2).sum()) for g in gs.values()))
    s = min(1.0, maxn / (tot + 1e-6))
    return {p: g * s for p, g in gs.items()}, tot

@torch.no_grad()
def exact_auc():
    model.eval()
    S, L = [], []
    for batch in eval_loader:
        labels, ids = batch["labels"], batch["input_ids"]
        att = batch.get("attention_mask")
        mask = labels != -100
        _, _, logits, _ = model.forward_generator(ids, att, batch.get("token_type_ids"), labels)
        samples = sample_replacements(logits, batch["sample_noise"][mask])
        rep, dl = replace_tokens(ids, labels, samples, att)
        _, _, dlog = model.forward_discriminator(rep, att, batch.get("token_type_ids"), dl)
        act = torch.ones_like(dl, dtype=torch.bool) if att is None else att.bool()
        S.append(dlog[act].float()); L.append(dl[act])
    model.train()
    sc, lb = torch.cat(S), torch.cat(L)
    order = sc.argsort()
    r = torch.empty_like(sc, dtype=torch.float64); r[order] = torch.arange(1, len(sc) + 1, dtype=torch.float64)
    npos, nneg = lb.sum().double(), (1 - lb).sum().double()
    return float(((r * lb).sum() - npos * (npos + 1) / 2) / (npos * nneg))

log = open(a.out, "w") if a.out else None
def emit(d):
    print(json.dumps(d), flush=True)
    if log: log.write(json.dumps(d) + "\n"); log.flush()

step, epoch, t0 = 0, 0, time.perf_counter()
run = {}
model.train()
while step < a.steps:
    loader = make_loader(train_rows.for_epoch(epoch), train_args.per_device_train_batch_size, pad_with_noise(collator.pad), train_args, train_args.seed + epoch)
    for micro, batch in enumerate(loader):
        batch = transform(batch, step_generator(train_args.seed, step, micro, 0))
        if a.disc_only:
            ids, labels = batch["input_ids"], batch["labels"]
            att = batch.get("attention_mask")
            att = torch.ones_like(ids) if att is None else att
            mask = labels != -100
            if a.disc_only == "uniform":
                samples = torch.randint(5, len(tokenizer), (int(mask.sum()),))
            elif a.disc_only == "dup":
                orig = torch.where(mask, labels, ids)
                left = torch.cat([orig[:, :1], orig[:, :-1]], 1)
                samples = left[mask]
            else:
                orig = torch.where(mask, labels, ids)
                freq += torch.bincount(orig[att.bool()], minlength=len(tokenizer)).float()
                samples = torch.multinomial(freq / freq.sum(), int(mask.sum()), replacement=True)
            replaced, dl = replace_tokens(ids, labels, samples, att)
            dloss, dacc, dlog = model.forward_discriminator(replaced, att, batch.get("token_type_ids"), dl)
            with torch.no_grad():
                sc, lb = dlog[att.bool()].float(), dl[att.bool()]
                r = sc.argsort().argsort().double() + 1
                npos, nneg = lb.sum(), (1 - lb).sum()
                train_auc = float(((r * lb).sum() - npos * (npos + 1) / 2) / (npos * nneg))
            gloss = dloss * 0
            gacc = torch.tensor(0.)
            out_loss = model.disc_weight * dloss
        else:
            out = model(**batch)
            gloss, dloss, gacc, dacc = out.generator_loss, out.discriminator_loss, out.generator_accuracy, out.discriminator_accuracy
        measure = a.clip == 'separate' or (step + 1) % a.log_every == 0
        if measure:
            gg = grads_of(gloss)
            gd = grads_of(model.disc_weight * dloss)
            ng = norms(gg, [gen_params, emb_params, disc_params])
            nd = norms(gd, [gen_params, emb_params, disc_params])
            tot_g = {p: gg[p] + gd[p] for p in allp}
            if a.clip == "global":
                final, total = clip_(tot_g, train_args.max_grad_norm)
            elif a.clip == "separate":
                cg, _ = clip_(gg, train_args.max_grad_norm)
                cd, _ = clip_(gd, train_args.max_grad_norm)
                final = {p: cg[p] + cd[p] for p in allp}
                total = math.sqrt(sum(float(g.pow(2).sum()) for g in tot_g.values()))
            else:
                final = tot_g
                total = math.sqrt(sum(float(g.pow(2).sum()) for g in tot_g.values()))
            for p in allp:
                p.grad = final[p]
            for p in allp:
                p.grad = final[p]
        else:
            (gloss + model.disc_weight * dloss).backward()
            if a.clip == 'global':
                torch.nn.utils.clip_grad_norm_(allp, train_args.max_grad_norm)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        step += 1
        for k, v in dict(gen_loss=float(gloss.detach()), disc_loss=float(dloss.detach()), gen_acc=float(gacc), disc_acc=float(dacc),
                         train_auc=(train_auc if a.disc_only else 0.0)).items():
            run[k] = run.get(k, 0) + v
        if step % a.log_every == 0:
            emit({"step": step, **{k: round(v / a.log_every, 4) for k, v in run.items()},
                  "last_gnorm": dict(gen_gen=round(ng[0], 3), gen_emb=round(ng[1], 3), disc_emb=round(nd[1], 3), disc_disc=round(nd[2], 3), total=round(total, 3)),
                  "s_per_step": round((time.perf_counter() - t0) / step, 3)})
            run = {}
        if step % a.eval_every == 0 or step == a.steps:
            m = evaluate(acc, model, eval_loader, electra_eval_step(), electra_summary, train_args.seed)
            ex = exact_auc()
            emit({"step": step, "exact_eval_auc": round(ex, 4), "eval": {k: round(m[k], 4) for k in ("generator_accuracy", "discriminator_accuracy", "discriminator_auc", "replaced_fraction", "discriminator_loss")}})
        if step >= a.steps:
            break
    epoch += 1
