"""Optimizers that step with K-FAC's curvature the ways its authors and their successors combine it.

K-FAC's preconditioned gradient must not be handed to Adam: Adam's per-coordinate normalization, made
in the parameters' own basis, undoes the preconditioning (James Martens, tensorflow/kfac#25). Three
combinations that do hold, each a torch optimizer over the parameters of a model that an `optim.KFAC`
watches (it keeps the factors: capture the Fisher backward inside `kfac.capture()` as usual):

- `EigenAdam`: Adam in the Kronecker factors' eigenbasis (EKFAC, George et al. 2018, "Fast Approximate
  Natural Gradient Descent in a Kronecker-factored Eigenbasis", arXiv:1806.03884; SOAP, Vyas et al.
  2024, arXiv:2409.11321). Each layer's gradient matrix V is rotated into the bases Q_G, Q_A of its
  factors G and A, Adam's moments are kept there, and the step is rotated back:

      V' = Q_G^T V Q_A,  m = b1 m + (1 - b1) V',  v = b2 v + (1 - b2) V'^2,
      step = -lr Q_G [m_hat / (sqrt(v_hat) + eps)] Q_A^T

  The second moment plays the part of EKFAC's corrected eigenvalues and Adam's eps that of the damping:
  no damping is used. When the bases are refreshed the first moment is rotated into the new ones and the
  second is kept as it is (eigh orders eigenvalues the same way each time; SOAP keeps it too). Carrying
  it instead as the variances of uncorrelated coordinates, v <- (R_G^2) v (R_A^2)^T with R = Q_new^T Q_old,
  ended a 300-step regression (the test's, 3 seeds) 2-5x worse at refresh intervals of 10-100: the old
  coordinates are correlated, which is what the rotation removes. Before a layer has factors it is Adam
  in the identity basis.

- `Graft`: K-FAC's direction with Adam's step size per layer (grafting: Agarwal et al. 2020,
  "Disentangling Adaptive Gradient Methods from Learning Rates", arXiv:2002.11803; Shampoo's practice in
  facebookresearch/optimizers): the first moment m (of the raw gradient) preconditioned by K-FAC,
  P = (G (x) A + damping)^-1 m_hat, rescaled to the norm of Adam's own step on the layer,

      step = -lr P ||m_hat / (sqrt(v_hat) + eps)|| / ||P||

  and pure Adam for the first `warmup` steps, while the factors settle.

- ACKTR's recipe (Wu et al. 2017) needs no class here: `KFAC(..., kl_clip=...)` then
  `torch.optim.SGD(momentum=0.9)`, with `kfac.step(lr)` before the SGD step (its continuous-control
  code, openai/baselines acktr: critic damping 0.1, KL clip 0.3, factor decay 0.95; policy damping 1e-2).

Parameters outside K-FAC's layers take a plain Adam step with the same hyper-parameters. A layer's
weight and bias must be in one parameter group (its learning rate is the weight's group's). `step()`
updates K-FAC's factors and decompositions when due (`kfac.update_curvature()`), then steps; it reads
nothing back to the host. State (moments, step counts and, for EigenAdam, the bases the first moment is
in) is in `state_dict()`; K-FAC's factors are in `kfac.state_dict()`.
"""
from __future__ import annotations

import torch

from optim.kfac import KFAC


class _KFACStep(torch.optim.Optimizer):
    """What EigenAdam and Graft share: Adam's hyper-parameters, the layer walk, the plain-Adam fallback."""

    def __init__(self, params, kfac: KFAC, lr: float, betas: tuple[float, float], eps: float, **extra):
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid eps: {eps}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, **extra))
        self.kfac = kfac
        mine = {p for group in self.param_groups for p in group["params"]}
        self._layers = []
        for layer in kfac.layers.values():
            module = layer.helper.module
            if module.weight not in mine:
                continue
            if module.bias is not None and module.bias not in mine:
                raise ValueError(f"layer {layer.name!r}: its bias is not among the parameters but its weight is")
            self._layers.append(layer)
        self._in_layers = {p for layer in self._layers for p in layer.helper.module.parameters(recurse=False)}

    def _groups(self) -> dict:
        # looked up at each step: load_state_dict replaces the group dicts
        return {p: group for group in self.param_groups for p in group["params"]}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.kfac.update_curvature()
        groups = self._groups()
        for layer in self._layers:
            module = layer.helper.module
            group = groups[module.weight]
            if module.bias is not None and groups[module.bias] is not group:
                raise ValueError(f"layer {layer.name!r}: its weight and bias must be in one parameter group")
            v = layer.helper.grad_matrix(layer.dtype)
            if v is None:
                continue
            update = self._layer_update(layer, v, self.state[module.weight], group)
            layer.helper.add_to_params(update, -group["lr"])
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p not in self._in_layers:
                    st = self.state[p]
                    p.add_(_adam_direction(st, p.grad, group), alpha=-group["lr"])
        return loss

    def _layer_update(self, layer, v: torch.Tensor, state: dict, group: dict) -> torch.Tensor:
        raise NotImplementedError


def _moments(state: dict, g: torch.Tensor, group: dict) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Adam's moments of `g` updated in `state`; returns them and their bias corrections."""
    b1, b2 = group["betas"]
    if "exp_avg" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(g)
        state["exp_avg_sq"] = torch.zeros_like(g)
    state["step"] += 1
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.lerp_(g, 1.0 - b1)
    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
    return m, v, 1.0 - b1 ** state["step"], 1.0 - b2 ** state["step"]


def _adam_direction(state: dict, g: torch.Tensor, group: dict) -> torch.Tensor:
    """Adam's step direction m_hat / (sqrt(v_hat) + eps) (Kingma & Ba 2015, Algorithm 1)."""
    m, v, bc1, bc2 = _moments(state, g, group)
    return (m / bc1).div_((v / bc2).sqrt_().add_(group["eps"]))


class EigenAdam(_KFACStep):
    """Adam in the eigenbasis of K-FAC's factors (EKFAC / SOAP; see the module docstring). Build the
    KFAC with mode="eigenbasis" (its bases for every layer); its damping is not used."""

    def __init__(self, params, kfac: KFAC, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if kfac.mode != "eigenbasis":
            raise ValueError("EigenAdam needs KFAC(mode='eigenbasis'): the eigenbases of every layer's factors")
        super().__init__(params, kfac, lr, betas, eps)

    def _layer_update(self, layer, v, state, group):
        d = layer.decomp
        qa, qg = d.get("QA"), d.get("QG")
        if qa is not None and state.get("version") != layer.version:
            # new bases: rotate the first moment from the bases it is in (none: the identity) into them
            if "exp_avg" in state:
                m = state["exp_avg"]
                if "QA" in state:
                    m = state["QG"] @ m @ state["QA"].mT
                state["exp_avg"] = qg.mT @ m @ qa
            state["QA"], state["QG"], state["version"] = qa, qg, layer.version
        if qa is None:
            return _adam_direction(state, v, group)
        return qg @ _adam_direction(state, qg.mT @ v @ qa, group) @ qa.mT


class Graft(_KFACStep):
    """K-FAC's direction at Adam's per-layer step size, pure Adam for the first `warmup` steps (see the
    module docstring). The KFAC's damping and mode set the direction."""

    def __init__(self, params, kfac: KFAC, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, warmup: int = 100):
        if warmup < 0:
            raise ValueError(f"Invalid warmup: {warmup}")
        super().__init__(params, kfac, lr, betas, eps, warmup=warmup)

    def _layer_update(self, layer, v, state, group):
        m, sq, bc1, bc2 = _moments(state, v, group)
        m_hat = m / bc1
        adam = m_hat / (sq / bc2).sqrt_().add_(group["eps"])
        if state["step"] <= group["warmup"] or not layer.decomp:
            return adam
        p = layer.precondition(m_hat, self.kfac.mode, self.kfac.damping)
        # per layer: each member of a stacked layer (optim.kfac.StackedLinear) its own norms
        p_norm = torch.linalg.vector_norm(p, dim=(-2, -1), keepdim=True).clamp_(min=torch.finfo(p.dtype).tiny)
        return p.mul_(torch.linalg.vector_norm(adam, dim=(-2, -1), keepdim=True) / p_norm)


__all__ = ["EigenAdam", "Graft"]
