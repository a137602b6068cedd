"""Cheap diagnostics of a checkpoint vs a random init of the same config: pooler / NSP-head / position
weight norms, and how input-dependent the last-layer [CLS] state is (std across inputs, attention of the
[CLS] query in the last layer: entropy and mass on [CLS]/[SEP])."""
import json
import os
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, BertForPreTraining

torch.set_num_threads(1)
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
rows = [json.loads(x) for x in open(Path(os.environ.get("HFSSL_TRANSFER_TASKS", "/tmp/hfssl_transfer_tasks")) / "wordnet_swap/test.jsonl")][:256]
enc = tok([r["text"] for r in rows], truncation=True, max_length=64, padding=True, return_tensors="pt")
torch.manual_seed(0)
full = BertForPreTraining.from_pretrained(path, attn_implementation="eager")
rand_full = BertForPreTraining(AutoConfig.from_pretrained(path, attn_implementation="eager"))
for name, m in (("checkpoint", full), ("random init", rand_full)):
    sd = m.state_dict()
    norms = {k: round(float(sd[k].norm()), 3) for k in ("bert.pooler.dense.weight", "bert.pooler.dense.bias",
             "cls.seq_relationship.weight", "bert.embeddings.position_embeddings.weight",
             "bert.embeddings.word_embeddings.weight")}
    enc_m = m.bert.eval()
    with torch.no_grad():
        o = enc_m(**enc, output_attentions=True)
    h = o.last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    mean = (h * mask).sum(1) / mask.sum(1)
    att = o.attentions[-1][:, :, 0, :]  # (B, heads, T): last layer, [CLS] query
    ent = float(-(att.clamp_min(1e-12).log() * att).sum(-1).mean())
    sep = (enc["input_ids"] == tok.sep_token_id).float()[:, None, :]
    print(json.dumps(dict(model=name, **norms,
                          cls_std_across_inputs=round(float(h[:, 0].std(0).mean()), 4),
                          mean_pool_std_across_inputs=round(float(mean.std(0).mean()), 4),
                          pooler_std_across_inputs=round(float(o.pooler_output.std(0).mean()), 4),
                          cos_cls_to_mean=round(float(torch.nn.functional.cosine_similarity(h[:, 0], mean).mean()), 3),
                          last_layer_cls_attn_entropy=round(ent, 3),
                          uniform_entropy=round(float(mask.sum(1).log().mean()), 3),
                          last_layer_cls_attn_on_cls=round(float(att[..., 0].mean()), 3),
                          last_layer_cls_attn_on_sep=round(float((att * sep).sum(-1).mean()), 3))))
