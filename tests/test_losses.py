"""Losses against brute-force loops over pairs, with gradients, and a real 2-process gloo run."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfssl.losses import BYOLLoss, InfoNCELoss, NTXentLoss, byol_loss, info_nce, nt_xent

ROOT = Path(__file__).resolve().parents[1]


def cos(a, b):
    return float(sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))


def brute_nt_xent(z1, z2, t):
    """Loop over anchors i of [z1; z2]: -log exp(s(i, pos) / t) / sum_{j != i} exp(s(i, j) / t), averaged."""
    z = z1.tolist() + z2.tolist()
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        denom = sum(math.exp(cos(z[i], z[j]) / t) for j in range(n2) if j != i)
        total += -(cos(z[i], z[pos]) / t - math.log(denom))
    return total / n2


def brute_nt_xent_torch(z1, z2, t):
    """The same loop in differentiable torch ops (no matrix products), for the gradient check."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        sims = [torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm()) / t for j in range(n2)]
        denom = torch.stack([torch.exp(sims[j]) for j in range(n2) if j != i]).sum()
        terms.append(-(sims[(i + n2 // 2) % n2] - torch.log(denom)))
    return torch.stack(terms).mean()


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_matches_loop(t):
    z1, z2 = rand(4, 6, seed=1), rand(4, 6, seed=2) * 3  # unnormalised on purpose
    assert nt_xent(z1, z2, t).item() == pytest.approx(brute_nt_xent(z1, z2, t), rel=1e-10)
    assert NTXentLoss(t)(z1, z2).item() == pytest.approx(brute_nt_xent(z1, z2, t), rel=1e-10)


def test_nt_xent_gradients_match_loop():
    a1, a2 = rand(3, 5, seed=3).requires_grad_(), rand(3, 5, seed=4).requires_grad_()
    b1, b2 = a1.detach().clone().requires_grad_(), a2.detach().clone().requires_grad_()
    nt_xent(a1, a2, 0.2).backward()
    brute_nt_xent_torch(b1, b2, 0.2).backward()
    torch.testing.assert_close(a1.grad, b1.grad)
    torch.testing.assert_close(a2.grad, b2.grad)


def test_nt_xent_masks_rather_than_subtracts_self_similarity():
    # identical views: the self-similarity equals the positive's, so keeping (or subtracting) it changes the loss
    z = rand(3, 4, seed=5)
    masked = brute_nt_xent(z, z, 0.5)
    assert nt_xent(z, z, 0.5).item() == pytest.approx(masked, rel=1e-10)
    with pytest.raises(ValueError):
        nt_xent(z, z[:2], 0.5)


def brute_moco_queue(q, k, queue, t):
    total = 0.0
    for i in range(len(q)):
        logits = [cos(q[i], k[i]) / t] + [cos(q[i], queue[j]) / t for j in range(len(queue))]
        total += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(q)


def brute_moco_v3(q, k, t):
    total = 0.0
    for i in range(len(q)):
        logits = [cos(q[i], k[j]) / t for j in range(len(k))]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(q)


@pytest.mark.parametrize("t", [0.07, 0.2])
def test_info_nce_matches_loops(t):
    q, k, queue = rand(4, 6, seed=6), rand(4, 6, seed=7), rand(10, 6, seed=8)
    assert info_nce(q, k, queue, t).item() == pytest.approx(brute_moco_queue(q.tolist(), k.tolist(),
                                                                            queue.tolist(), t), rel=1e-10)
    assert InfoNCELoss(t)(q, k).item() == pytest.approx(brute_moco_v3(q.tolist(), k.tolist(), t), rel=1e-10)


def test_info_nce_gradients_only_to_queries():
    q, k, queue = rand(3, 4, seed=9).requires_grad_(), rand(3, 4, seed=10).requires_grad_(), rand(5, 4, seed=11)
    queue.requires_grad_()
    info_nce(q, k, queue, 0.2).backward()
    assert k.grad is None and queue.grad is None
    qb = q.detach().clone().requires_grad_()
    kn = k.detach() / k.detach().norm(dim=1, keepdim=True)
    un = queue.detach() / queue.detach().norm(dim=1, keepdim=True)
    terms = []
    for i in range(3):
        qi = qb[i] / qb[i].norm()
        logits = torch.stack([torch.dot(qi, kn[i])] + [torch.dot(qi, un[j]) for j in range(5)]) / 0.2
        terms.append(-(logits[0] - torch.logsumexp(logits, 0)))
    torch.stack(terms).mean().backward()
    torch.testing.assert_close(q.grad, qb.grad)


def test_byol_loss_matches_loop_and_gradient():
    p, z = rand(5, 7, seed=12).requires_grad_(), rand(5, 7, seed=13).requires_grad_()
    expected = sum(2 - 2 * cos(a, b) for a, b in zip(p.tolist(), z.tolist())) / 5
    loss = BYOLLoss()(p, z)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert z.grad is None  # target side gets no gradient
    pb = p.detach().clone().requires_grad_()
    zd = z.detach()
    torch.stack([2 - 2 * torch.dot(pb[i], zd[i]) / (pb[i].norm() * zd[i].norm()) for i in range(5)]).mean().backward()
    torch.testing.assert_close(p.grad, pb.grad)
    assert byol_loss(z.detach(), z.detach() * 4).item() == pytest.approx(0.0, abs=1e-12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(arg: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(ROOT / "tests" / "dist_gather_check.py"), arg],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.slow  # repeated two-process runs
def test_backward_through_gather_exits_cleanly_every_time():
    """torch's own differentiable all_gather aborted at exit on gloo (SIGABRT after destroy_process_group) in
    9 of 25 runs from a shell and in 1 of 3 four-run rounds of this test; hfssl's gather: 0 of 30 runs.
    A probabilistic regression check, not a proof."""
    for attempt in range(4):
        proc = run_two_processes("--backward_only")
        assert proc.returncode == 0, f"attempt {attempt}: " + proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    proc = run_two_processes(str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    sys.path.insert(0, str(ROOT / "tests"))
    from dist_gather_check import N_PER_PROCESS as n
    from dist_gather_check import TEMPERATURE, global_batch

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world"] for r in ranks] == [(0, 2, True), (1, 2, True)]
    g1, g2, gq, gk = (t.clone().requires_grad_() for t in global_batch())
    full = nt_xent(g1, g2, TEMPERATURE)  # one process, 2N rows: mean over all 4N anchors
    full.backward()
    # the mean of the per-process losses is the one-process loss ...
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach())
    # ... and each process's z gets d(sum of all processes' losses)/dz = world * d(full)/dz, which DDP's
    # gradient averaging turns into exactly the one-process gradient.
    for r, res in enumerate(ranks):
        rows = slice(r * n, (r + 1) * n)
        torch.testing.assert_close(res["grad_z1"], 2 * g1.grad[rows])
        torch.testing.assert_close(res["grad_z2"], 2 * g2.grad[rows])
        torch.testing.assert_close(res["gathered"], global_batch()[0])
        torch.testing.assert_close(res["keys"], global_batch()[3])
        assert res["keys_grad"] is False and res["grad_k"] is None
    # MoCo v3 in-batch form: labels offset by rank over the gathered keys (no gradient through keys)
    moco = info_nce(gq, gk, temperature=TEMPERATURE)
    moco.backward()
    torch.testing.assert_close((ranks[0]["moco"] + ranks[1]["moco"]) / 2, moco.detach())
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["grad_q"], 2 * gq.grad[r * n:(r + 1) * n])
