"""Adam whose state is created at construction and lives in shared memory.

Asynchronous actor-learners (Hogwild!, Recht et al. 2011; A3C, Mnih et al. 2016, which shares the
RMSprop statistics across threads) update one model and one optimizer state from several processes:

    model.share_memory()
    opt = SharedAdam(model.parameters(), lr=1e-4)
    workers = [ctx.Process(target=train, args=(rank, model, opt)) for rank in range(n)]

torch.optim.Adam creates its state lazily at the first step, in the stepping process's private memory,
so each worker would silently keep its own moments. Here every moment and step counter exists before
the workers start and is moved to shared memory (`Tensor.share_memory_`), so all workers read and
write the same buffers; updates are lock-free, as in Hogwild!, so concurrent steps may interleave.
The step counter is shared too, so bias correction follows the total number of updates.

The update is torch.optim.Adam's (Kingma & Ba 2015, Algorithm 1; `decoupled_weight_decay` gives
AdamW, Loshchilov & Hutter 2019), so in one process SharedAdam is a drop-in Adam, e.g. the single
optimizer over a PPO actor-critic's parameters. On CUDA, tensors are shared by the CUDA IPC mechanism
when sent to another process; `share_memory_` is a no-op there.
"""
from __future__ import annotations

import torch

from optim._util import new_step


class SharedAdam(torch.optim.Adam):
    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ):
        # Not offered: capturable and fused keep `step` on the device, differentiable needs autograd
        # through the state; none of them fits state that other processes write to.
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)

    def add_param_group(self, param_group):
        """Each new group's state is made, and shared, right away (also for the groups given at
        construction, which Optimizer.__init__ adds through here)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            self._init_state(p, group)

    def _init_state(self, p, group):
        state = self.state[p]
        if len(state) == 0:  # the same buffers torch.optim.Adam would create at its first step
            state["step"] = new_step()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        for value in state.values():
            value.share_memory_()

    def share_memory(self) -> SharedAdam:
        """Put all state in shared memory (already done at construction; kept for A3C-style code)."""
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)
        return self

    def load_state_dict(self, state_dict):
        """Load into the existing shared buffers, in place, so that workers holding them see the values.

        Optimizer.load_state_dict builds new tensors; the buffers other processes already map would
        otherwise keep the old values while this process moved on.
        """
        shared = {p: dict(self.state[p]) for group in self.param_groups for p in group["params"]}
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                old, new = shared.get(p, {}), self.state[p]
                for key, value in list(new.items()):
                    buf = old.get(key)
                    if buf is not None and buf.shape == value.shape and buf.dtype == value.dtype:
                        buf.copy_(value)
                        new[key] = buf
                self._init_state(p, group)


__all__ = ["SharedAdam"]
