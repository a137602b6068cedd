"""Tables from results/ft.jsonl: per arm and task, best lr by mean validation accuracy -> test mean +- sd."""
import json
import statistics as st
import sys
from collections import defaultdict

rows = [json.loads(x) for f in sys.argv[1:] for x in open(f) if x.strip()]
groups = defaultdict(lambda: defaultdict(list))
for r in rows:
    key = (r["tag"], r["task"], r["arm"], r["dropout"], r["pooler"], r["steps"], r["warmup"])
    groups[key][r["lr"]].append(r)
print("| tag | task | arm | dropout | pooler | steps/warmup | lr (by val) | seeds | val | test mean ± sd | test per seed | all lrs: test mean |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for key in sorted(groups, key=lambda k: (k[1], k[0], k[2], str(k[3]), k[4])):
    by_lr = groups[key]
    best = max(by_lr, key=lambda lr: st.mean(r["val"] for r in by_lr[lr]))
    t = [r["test"] for r in by_lr[best]]
    v = [r["val"] for r in by_lr[best]]
    sd = st.stdev(t) if len(t) > 1 else 0.0
    if "test_unseen" in by_lr[best][0]:
        u = [r["test_unseen"] for r in by_lr[best]]
        t_uns = f" (unseen-word test {100 * st.mean(u):.1f} ± {100 * (st.stdev(u) if len(u) > 1 else 0):.1f})"
    else:
        t_uns = ""
    alllr = ", ".join(f"{lr:g}: {100 * st.mean(r['test'] for r in by_lr[lr]):.1f}" for lr in sorted(by_lr))
    tag, task, arm, drop, pool, steps, warm = key
    print(f"| {tag} | {task} | {arm} | {drop if drop is not None else 'cfg'} | {pool} | {steps}/{warm} | {best:g} | "
          f"{len(t)} | {100 * st.mean(v):.1f} | {100 * st.mean(t):.1f} ± {100 * sd:.1f}{t_uns} | "
          f"{' '.join(f'{100 * x:.1f}' for x in t)} | {alllr} |")
