"""SharedAdam: state made and shared at construction, two processes updating one model and one
optimizer state (each sees the other's updates), drop-in Adam in one process, in-place load."""
from __future__ import annotations

import queue

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from optim import SharedAdam

TIMEOUT = 60  # seconds; a worker that has not answered by then fails the test instead of hanging CI


def _grads(rank):
    g = torch.Generator().manual_seed(10 + rank)
    return [torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)]


def _snapshot(model, opt):
    """Plain Python numbers: a tensor sent through a queue is received by a handle to its memory, which
    would be gone once the sending worker has exited."""
    p = list(model.parameters())
    return {"params": [t.detach().tolist() for t in p], "step": float(opt.state[p[0]]["step"])}


def _worker(rank, model, opt, turn, results):
    """Rank 0 steps first, then rank 1; each reports what it saw of the other's update."""
    try:
        seen_before = None
        if rank == 1:
            if not turn[0].wait(TIMEOUT):
                raise TimeoutError("rank 0 never stepped")
            seen_before = _snapshot(model, opt)          # rank 0's update, seen from here
        for p, g in zip(model.parameters(), _grads(rank)):
            p.grad = g
        opt.step()
        turn[rank].set()
        if rank == 0 and not turn[1].wait(TIMEOUT):
            raise TimeoutError("rank 1 never stepped")
        results.put((rank, seen_before, _snapshot(model, opt)))
    except Exception as e:  # report instead of dying silently
        results.put((rank, "error", repr(e)))


def _reference(initial):
    """The same two updates made by one Adam in this process: rank 0's gradients, then rank 1's."""
    params = [t.clone().requires_grad_() for t in initial]
    opt = torch.optim.Adam(params, lr=0.1)
    history = []
    for rank in (0, 1):
        for p, g in zip(params, _grads(rank)):
            p.grad = g
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history


def test_two_processes_share_model_and_optimizer_state():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    model.share_memory()
    opt = SharedAdam(model.parameters(), lr=0.1)
    initial = [p.detach().clone() for p in model.parameters()]
    after_0, after_1 = _reference(initial)

    ctx = mp.get_context("spawn")
    turn = (ctx.Event(), ctx.Event())
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, model, opt, turn, results), daemon=True) for rank in (0, 1)]
    for p in procs:
        p.start()
    try:
        reports = {}
        for _ in procs:
            rank, seen_before, final = results.get(timeout=TIMEOUT)
            assert seen_before != "error", f"worker {rank}: {final}"
            reports[rank] = (seen_before, final)
    except queue.Empty:
        pytest.fail("a worker did not report in time")
    finally:
        for p in procs:
            p.join(timeout=TIMEOUT)
            if p.is_alive():
                p.terminate()

    # rank 1, before stepping, saw rank 0's parameters and optimizer state
    seen = reports[1][0]
    assert seen["step"] == 1.0
    for a, b in zip(seen["params"], after_0):
        torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), b, rtol=1e-12, atol=0)
    # rank 0, after rank 1's step, sees both updates, and so does this process
    for final in (reports[0][1], reports[1][1], _snapshot(model, opt)):
        assert final["step"] == 2.0
        for a, b in zip(final["params"], after_1):
            torch.testing.assert_close(torch.tensor(a, dtype=torch.float64), b, rtol=1e-12, atol=0)


def test_state_is_shared_from_construction():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    opt = SharedAdam(model.parameters(), amsgrad=True)
    for p in model.parameters():
        state = opt.state[p]
        assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
        assert all(t.is_shared() for t in state.values())
    extra = torch.zeros(5, requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 1e-2})
    assert all(t.is_shared() for t in opt.state[extra].values())


def test_matches_torch_adam_on_an_actor_critic():
    """One process, one optimizer over a PPO-style actor-critic with a shared trunk: the same numbers as
    torch.optim.Adam (both foreach settings), also with gradient-less parameters along the way."""
    def make():
        torch.manual_seed(0)
        return nn.ModuleDict({"trunk": nn.Linear(4, 8), "actor": nn.Linear(8, 2), "critic": nn.Linear(8, 1)})

    results = []
    for cls, foreach in ((torch.optim.Adam, False), (SharedAdam, False), (SharedAdam, True)):
        net = make()
        opt = cls(net.parameters(), lr=3e-3, eps=1e-5, foreach=foreach)
        torch.manual_seed(1)
        for t in range(6):
            opt.zero_grad()
            h = torch.tanh(net["trunk"](torch.randn(16, 4)))
            loss = net["critic"](h).pow(2).mean()
            if t % 2 == 0:                                  # the actor's loss only every other step
                loss = loss - torch.log_softmax(net["actor"](h), -1)[:, 0].mean()
            loss.backward()
            opt.step()
        results.append([p.detach().clone() for p in net.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_load_state_dict_writes_into_the_shared_buffers():
    model = nn.Linear(3, 2)
    opt = SharedAdam(model.parameters(), lr=0.1)
    buffers = {id(p): opt.state[p]["exp_avg"] for p in model.parameters()}
    donor_model = nn.Linear(3, 2)
    donor = torch.optim.Adam(donor_model.parameters(), lr=0.1)
    for _ in range(3):
        for p in donor_model.parameters():
            p.grad = torch.ones_like(p)
        donor.step()
    opt.load_state_dict(donor.state_dict())
    for p, q in zip(model.parameters(), donor_model.parameters()):
        assert opt.state[p]["exp_avg"] is buffers[id(p)]        # same (shared) tensor ...
        assert torch.equal(opt.state[p]["exp_avg"], donor.state[q]["exp_avg"])   # ... new values
        assert float(opt.state[p]["step"]) == 3.0 and opt.state[p]["step"].is_shared()
