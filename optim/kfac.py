"""K-FAC: Kronecker-factored approximate curvature as a gradient preconditioner for Linear and Conv2d
layers (Martens & Grosse 2015, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", arXiv:1503.05671; convolutions as Grosse & Martens 2016, "A Kronecker-factored approximate
Fisher matrix for convolution layers", arXiv:1602.01407; trust region as ACKTR, Wu et al. 2017,
arXiv:1708.05144).

For a layer y = W a + b, write a_bar = [a, 1] (the bias folded in as a last input column) and
g = dl/dy for one example's loss l. The example's gradient of [W, b] is g a_bar^T, and the Fisher
block of that layer is approximated by a Kronecker product of two small matrices:

    F = E[vec(g a_bar^T) vec(g a_bar^T)^T] ~ G (x) A,   A = E[a_bar a_bar^T],  G = E[g g^T]

(vec row-major, so F's index is out * (in + 1) + in). Then (G (x) A)^-1 vec(V) = vec(G^-1 V A^-1)
for the gradient matrix V, which is what makes the natural gradient affordable.

Usage: statistics are captured only inside `with kfac.capture():`, `kfac.step()` rewrites `.grad`,
and any optimizer then steps:

    kfac = KFAC(critic, damping=1e-3, inv_update_freq=10)
    with kfac.capture():                       # critic's forward and its own loss's backward
        loss = F.mse_loss(critic(obs, act), target)
        loss.backward()
    actor_loss = -critic(obs, actor(obs)).mean()   # outside: feeds nothing to the critic's factors
    kfac.step(); opt.step()

The model carries hooks only while a capture is open, so `copy.deepcopy(model)` (a target network)
outside one copies no hooks and no K-FAC state. For a true (rather than empirical) Fisher, back-propagate
a loss on targets sampled from the model inside the capture (`gaussian_fisher_loss`,
`policy_fisher_loss`, as ACKTR), zero the gradients, and back-propagate the real loss outside it.

Scaling. The hooks see dL/dy for the batch loss L; with the mean reduction over n examples this is
g / n, so it is multiplied back by n: A and G are per-example expectations whatever the batch size, and
the damping means the same thing at any batch size. A loss summed over examples: `reduction="sum"`.
Every leading dimension of a Linear's input counts as an example. For Conv2d, A averages over examples
and output locations and G sums over locations (the spatially uncorrelated approximation of Grosse &
Martens), so a 1x1 convolution over one pixel is exactly a Linear layer.

Damping. `mode="eigen"` keeps eigendecompositions A = Q_A diag(d_A) Q_A^T, G = Q_G diag(d_G) Q_G^T and
applies the exact inverse of G (x) A + damping * I:

    P = Q_G [(Q_G^T V Q_A) / (d_G d_A^T + damping)] Q_A^T

For a layer with one output (a critic's last layer), G is a scalar g and this is V (g A + damping I)^-1:
such a layer keeps that inverse instead, the same one without an eigendecomposition.
`mode="inverse"` keeps (G + sqrt(damping)/pi I)^-1 and (A + pi sqrt(damping) I)^-1 with Martens &
Grosse's factored Tikhonov damping (section 6.3), pi^2 = (tr(A) / dim A) / (tr(G) / dim G): cheaper
per step (two matmuls instead of four), approximate. `mode="eigenbasis"` is eigen mode with every
layer's eigenbases kept (no one-output shortcut), for the optimizers that step in them
(optim.kfac_steps.EigenAdam). Factors are updated every `factor_update_freq`
steps (running averages with `factor_decay`), decompositions every `inv_update_freq` steps.

KL clipping (ACKTR): with `kl_clip` set, the preconditioned gradients are scaled by
min(1, sqrt(kl_clip / (lr^2 sum_l <P_l, V_l>))), which bounds the KL change of a step of size lr.

Stacked layers. `StackedLinear(n, in, out)` is n independent Linear layers run as one (a batched matrix
product: twin critics, ensembles), each member taking the same input or its own. K-FAC keeps each
member's own A and G, stacked (n, d, d), and preconditions each member's gradient with its own, so that
a StackedLinear is preconditioned exactly as its n Linear layers would be, in batched products.

Nothing in `step()` reads a value back to the host, except that `torch.linalg.eigh` checks its own
convergence (a sync on CUDA) when decompositions are refreshed.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def _factor_dtype(weight: torch.Tensor) -> torch.dtype:
    """float64 models keep float64 factors; everything else (fp32, fp16, bf16) gets float32 factors."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------
# Layer helpers: the per-layer-type math (activations -> A, output gradients -> G, gradient matrix).


class LinearHelper:
    """nn.Linear: y = x W^T + b over rows; every leading dimension of x is a batch dimension."""

    def __init__(self, module: nn.Linear):
        self.module = module
        self.has_bias = module.bias is not None
        self.a_dim = module.in_features + int(self.has_bias)
        self.g_dim = module.out_features

    def _with_ones(self, a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1) if self.has_bias else a

    def a_rows(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The rows a_bar whose outer products A averages, one per example."""
        return self._with_ones(x.reshape(-1, x.shape[-1]).to(dtype))

    def g_rows(self, grad_out: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
        """The rows g whose outer products G sums, and the number of examples they come from."""
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype)
        return g, g.shape[0]

    def grad_matrix(self, dtype: torch.dtype) -> torch.Tensor | None:
        """[dW, db] as one (out, in + 1) matrix, or None when the weight has no gradient."""
        w = self.module.weight
        if w.grad is None:
            return None
        v = w.grad.reshape(self.g_dim, -1).to(dtype)
        if self.has_bias:
            b = self.module.bias.grad
            b = torch.zeros(self.g_dim, dtype=dtype, device=v.device) if b is None else b.to(dtype)
            v = torch.cat([v, b.unsqueeze(1)], dim=1)
        return v

    def set_grad(self, p: torch.Tensor) -> None:
        w = self.module.weight
        w.grad.copy_(p[:, : self.a_dim - int(self.has_bias)].reshape(w.shape))
        if self.has_bias and self.module.bias.grad is not None:
            self.module.bias.grad.copy_(p[:, -1])

    def add_to_params(self, u: torch.Tensor, alpha: float) -> None:
        """[W, b] += alpha * u, for an update u laid out as `grad_matrix` (optimizers that step in place)."""
        w = self.module.weight
        w.add_(u[:, : self.a_dim - int(self.has_bias)].reshape(w.shape).to(w.dtype), alpha=alpha)
        if self.has_bias:
            self.module.bias.add_(u[:, -1].to(self.module.bias.dtype), alpha=alpha)


class StackedLinear(nn.Module):
    """`members` independent Linear layers as one module: weight (members, out, in), bias (members, out),
    each initialized as nn.Linear initializes its own. An input (..., in) goes to every member, an input
    (members, B, in) gives each its own rows; the output is (members, B, out). One batched product
    instead of `members` separate ones: fewer and larger kernels (SAC's twin critics, 256 units, batch
    256: their forward, backward and Adam step 2.4 ms against 3.4 ms as two networks, two CPU threads)."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        with torch.no_grad():  # nn.Linear's reset_parameters: kaiming_uniform_(a=sqrt(5)) is U(-bound, bound)
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != self.members:  # one input for every member
            x = x.reshape(-1, x.shape[-1]).expand(self.members, -1, -1)
        if self.bias is None:
            return torch.bmm(x, self.weight.mT)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.mT)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class StackedLinearHelper(LinearHelper):
    """StackedLinear: each member a Linear layer, its factors and gradient matrix stacked (members first)."""

    def __init__(self, module: StackedLinear):
        self.module = module
        self.has_bias = module.bias is not None
        self.a_dim = module.in_features + int(self.has_bias)
        self.g_dim = module.out_features
        self.members = module.members

    def _with_ones(self, a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1) if self.has_bias else a

    def a_rows(self, x, dtype):
        """(R, a_dim) when every member took the same input (its statistics computed once), else
        (members, R, a_dim)."""
        if x.dim() == 3 and x.shape[0] == self.members:
            return self._with_ones(x.to(dtype))
        return self._with_ones(x.reshape(-1, x.shape[-1]).to(dtype))

    def g_rows(self, grad_out, dtype):
        g = grad_out.to(dtype)
        return g, g.shape[1]

    def grad_matrix(self, dtype):
        """[dW, db] as one (members, out, in + 1) tensor, or None when the weight has no gradient."""
        w = self.module.weight
        if w.grad is None:
            return None
        v = w.grad.to(dtype)
        if self.has_bias:
            b = self.module.bias.grad
            b = torch.zeros(w.shape[:2], dtype=dtype, device=v.device) if b is None else b.to(dtype)
            v = torch.cat([v, b.unsqueeze(-1)], dim=-1)
        return v

    def set_grad(self, p):
        w = self.module.weight
        w.grad.copy_(p[..., : self.module.in_features])
        if self.has_bias and self.module.bias.grad is not None:
            self.module.bias.grad.copy_(p[..., -1])

    def add_to_params(self, u, alpha):
        w = self.module.weight
        w.add_(u[..., : self.module.in_features].to(w.dtype), alpha=alpha)
        if self.has_bias:
            self.module.bias.add_(u[..., -1].to(self.module.bias.dtype), alpha=alpha)


class Conv2dHelper(LinearHelper):
    """nn.Conv2d as a Linear layer over image patches: each output location is a row whose input is the
    unfolded (C_in * kh * kw) patch under the kernel."""

    def __init__(self, module: nn.Conv2d):
        if module.groups != 1:
            raise ValueError("K-FAC supports Conv2d with groups=1 only")
        if module.padding_mode != "zeros":
            raise ValueError("K-FAC supports Conv2d with padding_mode='zeros' only")
        padding = module.padding
        if isinstance(padding, str):
            if padding != "valid":
                raise ValueError("K-FAC supports Conv2d with explicit or 'valid' padding only, not 'same'")
            padding = (0, 0)
        self.module = module
        self.padding = padding
        self.has_bias = module.bias is not None
        kh, kw = module.kernel_size
        self.a_dim = module.in_channels * kh * kw + int(self.has_bias)
        self.g_dim = module.out_channels

    def a_rows(self, x, dtype):
        """One row per (example, location): the unfolded patch under the kernel, and a 1 for the bias."""
        m = self.module
        if x.dim() == 3:  # an unbatched (C, H, W) input
            x = x.unsqueeze(0)
        patches = F.unfold(x.to(dtype), m.kernel_size, dilation=m.dilation, padding=self.padding, stride=m.stride)
        return self._with_ones(patches.transpose(1, 2).reshape(-1, patches.shape[1]))

    def g_rows(self, grad_out, dtype):
        """One row per (example, location); G sums over locations, so the count is of examples."""
        if grad_out.dim() == 3:
            grad_out = grad_out.unsqueeze(0)
        g = grad_out.to(dtype).permute(0, 2, 3, 1).reshape(-1, grad_out.shape[1])
        return g, grad_out.shape[0]


def _add_to_mean(mean: torch.Tensor | None, count: int, rows: torch.Tensor, alpha: float, n: int,
                 members: int | None = None):
    """Fold alpha rows^T rows, the statistics of n more examples, into the running mean over `count`
    examples so far: mean <- (count mean + alpha rows^T rows) / (count + n), in place in one BLAS call
    (no product to allocate, add and later divide; the factor matmuls are most of what the hooks
    cost). With count 0 the old contents are ignored. Returns the mean and the new count.
    A stacked layer's mean is (members, d, d): rows (members, R, d) fold member by member, rows (R, d)
    (one input for all) into every member alike."""
    if n == 0:
        return mean, count
    d = rows.shape[-1]
    if mean is None:
        mean, count = rows.new_empty(*((members,) if members else ()), d, d), 0
    total = count + n
    if rows.dim() == 3:
        return mean.baddbmm_(rows.mT, rows, beta=count / total, alpha=alpha / total), total
    if mean.dim() == 3:  # (scaling a new buffer's leftover contents by 0 would keep any NaN in them)
        product = (rows.T @ rows).mul_(alpha / total)
        return (mean.copy_(product) if count == 0 else mean.mul_(count / total).add_(product)), total
    return mean.addmm_(rows.T, rows, beta=count / total, alpha=alpha / total), total


def _pd_inverse(m: torch.Tensor) -> torch.Tensor:
    """The inverse of a positive definite (damped) factor, through its Cholesky factor: half the cost
    of an LU inverse (0.36 against 0.66 ms at 257 x 257, float32, one thread). cholesky_ex, unlike
    cholesky, does not check for failure on the host, which would be a sync on CUDA."""
    return torch.cholesky_inverse(torch.linalg.cholesky_ex(m)[0])


# --------------------------------------------------------------------------------------------------
# Factors and their decompositions, one object per layer; the hooks only feed `accumulate_*`.


class KFACLayer:
    def __init__(self, name: str, helper: LinearHelper):
        self.name = name
        self.helper = helper
        self.dtype = _factor_dtype(helper.module.weight)
        self.members = getattr(helper, "members", None)  # a StackedLinear's: factors (members, d, d)
        self.A: torch.Tensor | None = None  # running E[a_bar a_bar^T]
        self.G: torch.Tensor | None = None  # running E[g g^T]
        self.decomp: dict[str, torch.Tensor] = {}
        self.version = 0  # counts decompositions, so that optimizers working in its bases see a new one
        # Means of the batch statistics captured since the last factor update, over `count` examples.
        # The buffers are kept across updates (count 0 marks them stale: the next capture overwrites).
        self._a_mean, self._a_count = None, 0
        self._g_mean, self._g_count = None, 0
        # eigen mode: (decomposition dict, damping, what `_derived` made from them)
        self._derived_cache: tuple[dict, float, torch.Tensor] | None = None

    # statistics of the current capture(s), averaged until the next factor update
    def accumulate_a(self, x: torch.Tensor) -> None:
        rows = self.helper.a_rows(x, self.dtype)
        self._a_mean, self._a_count = _add_to_mean(self._a_mean, self._a_count, rows, 1.0, rows.shape[-2],
                                                   self.members)

    def accumulate_g(self, grad_out: torch.Tensor, mean_reduced: bool) -> None:
        rows, n = self.helper.g_rows(grad_out, self.dtype)
        # a mean-reduced loss's output gradients are the examples' own divided by n: undo it (squared)
        alpha = float(n) ** 2 if mean_reduced else 1.0
        self._g_mean, self._g_count = _add_to_mean(self._g_mean, self._g_count, rows, alpha, n, self.members)

    def clear_accumulators(self) -> None:
        self._a_count, self._g_count = 0, 0

    def update_factors(self, decay: float) -> bool:
        """Fold the captured batch statistics into the running factors; False if there were none."""
        if self._a_count == 0 or self._g_count == 0:
            self.clear_accumulators()
            return False
        self.clear_accumulators()
        if self.A is None:  # the first batch initializes the averages (no bias towards zero)
            self.A, self.G = self._a_mean, self._g_mean
            self._a_mean = self._g_mean = None  # now the factors themselves: the next capture gets new buffers
        else:
            self.A.lerp_(self._a_mean, 1.0 - decay)
            self.G.lerp_(self._g_mean, 1.0 - decay)
        return True

    def update_decomposition(self, mode: str, damping: float) -> None:
        self.version += 1
        if mode == "eigen" and self.G.shape[-1] == 1:  # (mode "eigenbasis" wants the bases themselves)
            # One output (a critic's or a value head's last layer): G is a scalar g, and the inverse of
            # G (x) A + damping I is (g A + damping I)^-1, made by Cholesky (see `_derived`): the same
            # exact damped inverse as through eigh(A), at a seventh of the cost (0.36 against 2.6 ms at
            # 257 x 257, float32, one thread).
            self.decomp = {"A_ref": self.A.clone(), "G_ref": self.G.clone()}
        elif mode in ("eigen", "eigenbasis"):
            # Factors are PSD; eigh may return tiny negative eigenvalues from rounding.
            d_a, q_a = torch.linalg.eigh(self.A)
            d_g, q_g = torch.linalg.eigh(self.G)
            self.decomp = {"QA": q_a, "dA": d_a.clamp_(min=0.0), "QG": q_g, "dG": d_g.clamp_(min=0.0)}
        else:
            eye_a = torch.eye(self.A.shape[-1], dtype=self.dtype, device=self.A.device)
            eye_g = torch.eye(self.G.shape[-1], dtype=self.dtype, device=self.G.device)
            tiny = torch.finfo(self.dtype).tiny
            # (each member of a stacked layer its own pi)
            mean_a = torch.diagonal(self.A, dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp(min=tiny)
            mean_g = torch.diagonal(self.G, dim1=-2, dim2=-1).mean(-1, keepdim=True).clamp(min=tiny)
            pi = torch.sqrt(mean_a / mean_g).unsqueeze(-1)
            root = math.sqrt(damping)
            self.decomp = {"A_inv": _pd_inverse(self.A + (pi * root) * eye_a),
                           "G_inv": _pd_inverse(self.G + (root / pi) * eye_g)}

    def _derived(self, damping: float) -> torch.Tensor:
        """What eigen mode's preconditioning needs from the decomposition and the damping, made once per
        decomposition rather than on every step: 1 / (d_G d_A^T + damping), or for one output
        (g A + damping I)^-1. Keyed by the decomposition dict itself, so a decomposition
        replaced from outside (load_state_dict, or by hand) or a changed damping never gets a stale one."""
        cached = self._derived_cache
        if cached is None or cached[0] is not self.decomp or cached[1] != damping:
            d = self.decomp
            if "A_ref" in d:
                damped = d["A_ref"] * d["G_ref"]  # g A: G_ref is (1, 1), or (members, 1, 1)
                damped.diagonal(dim1=-2, dim2=-1).add_(damping)
                value = _pd_inverse(damped)
            else:
                value = (d["dG"].unsqueeze(-1) * d["dA"].unsqueeze(-2)).add_(damping).reciprocal_()
            cached = self._derived_cache = (d, damping, value)
        return cached[2]

    def precondition(self, v: torch.Tensor, mode: str, damping: float) -> torch.Tensor:
        d = self.decomp
        if "A_ref" in d:
            return v @ self._derived(damping)
        if "QA" in d:
            v1 = d["QG"].mT @ v @ d["QA"]
            v1.mul_(self._derived(damping))
            return d["QG"] @ v1 @ d["QA"].mT
        return d["G_inv"] @ v @ d["A_inv"]


# --------------------------------------------------------------------------------------------------


class KFAC:
    """K-FAC preconditioner for the Linear, StackedLinear and Conv2d layers of `model` (see the module
    docstring)."""

    def __init__(
        self,
        model: nn.Module,
        damping: float = 1e-3,
        factor_decay: float = 0.95,
        factor_update_freq: int = 1,
        inv_update_freq: int = 10,
        mode: str = "eigen",
        kl_clip: float | None = None,
        lr: float | None = None,
        reduction: str = "mean",
        skip: Iterable[str] = (),
    ):
        """`skip`: names (as in `model.named_modules()`) of layers, or of containers whose layers, to
        leave alone; their gradients pass through unchanged. `lr` is only used by KL clipping (or pass it
        to `step`, e.g. when a schedule changes it)."""
        if damping < 0:
            raise ValueError(f"Invalid damping: {damping}")
        if not 0.0 <= factor_decay < 1.0:
            raise ValueError(f"Invalid factor_decay: {factor_decay}")
        if factor_update_freq < 1 or inv_update_freq < 1:
            raise ValueError("factor_update_freq and inv_update_freq must be >= 1")
        if mode not in ("eigen", "eigenbasis", "inverse"):
            raise ValueError(f"Invalid mode: {mode!r} (choose 'eigen', 'eigenbasis' or 'inverse')")
        if kl_clip is not None and kl_clip <= 0:
            raise ValueError(f"Invalid kl_clip: {kl_clip}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"Invalid reduction: {reduction!r} (choose 'mean' or 'sum')")
        self.damping = damping
        self.factor_decay = factor_decay
        self.factor_update_freq = factor_update_freq
        self.inv_update_freq = inv_update_freq
        self.mode = mode
        self.kl_clip = kl_clip
        self.lr = lr
        self.reduction = reduction
        self.steps = 0

        skip = tuple(skip)
        self.layers: dict[str, KFACLayer] = {}
        for name, module in model.named_modules():
            if any(name == s or name.startswith(s + ".") for s in skip):
                continue
            if isinstance(module, nn.Linear):
                helper = LinearHelper(module)
            elif isinstance(module, StackedLinear):
                helper = StackedLinearHelper(module)
            elif isinstance(module, nn.Conv2d):
                try:
                    helper = Conv2dHelper(module)
                except ValueError as e:
                    raise ValueError(f"layer {name!r}: {e}; leave it out with skip=[{name!r}]") from None
            else:
                continue
            if not module.weight.requires_grad:
                continue
            self.layers[name] = KFACLayer(name, helper)
        if not self.layers:
            raise ValueError("K-FAC found no trainable Linear or Conv2d layer in the model")
        self._by_module = {layer.helper.module: layer for layer in self.layers.values()}
        self._capturing = False

    @property
    def factors_due(self) -> bool:
        """Whether the next `step()` updates the factors: only then does a capture record anything, so
        a trainer can skip the extra Fisher backward on the other steps."""
        return self.steps % self.factor_update_freq == 0

    # ---- capture ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self):
        """Record factor statistics for forwards and backwards run inside this block, and only those.

        Forward hooks are registered on entry and removed on exit; each recorded forward hooks its
        output tensor for the backward (one cheap tensor hook, instead of a module backward hook that
        wraps every input and output in an extra autograd node). Graphs built inside the block keep
        calling those tensor hooks afterwards (autograd holds them), so the hooks also check that a
        capture is open: a backward run after the block records nothing. Forwards under
        `torch.no_grad()` are not recorded. On steps where `step()` will not update factors, nothing
        is hooked at all.
        """
        if self._capturing:  # nested: the outer block already hooks everything
            yield self
            return
        handles = []
        if self.factors_due:
            forward_hook = self._forward_hook()
            for module in self._by_module:
                handles.append(module.register_forward_hook(forward_hook))
        self._capturing = True
        try:
            yield self
        finally:
            self._capturing = False
            for h in handles:
                h.remove()

    def _forward_hook(self):
        # A plain closure rather than a bound method: if a model is deep-copied while a capture is open,
        # deepcopy shares a function instead of copying its owner (this whole object). The copied
        # modules are not in `_by_module`, so their calls record nothing.
        by_module = self._by_module
        mean_reduced = self.reduction == "mean"

        def forward_hook(module, inputs, output):
            layer = by_module.get(module)
            if layer is None or not self._capturing or not torch.is_grad_enabled():
                return
            with torch.no_grad():
                layer.accumulate_a(inputs[0].detach())
            if output.requires_grad:
                # Fires with dL/d(output) as it was produced here, even if a later op (an in-place
                # ReLU) modifies the output.
                def grad_hook(grad):
                    if self._capturing:
                        with torch.no_grad():
                            layer.accumulate_g(grad.detach(), mean_reduced)

                output.register_hook(grad_hook)

        return forward_hook

    # ---- step ------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_curvature(self) -> None:
        """Update factors and decompositions when due, and count the step: what `step()` does before it
        preconditions, and all that an optimizer stepping in K-FAC's eigenbasis needs from it
        (optim.kfac_steps)."""
        if self.steps % self.factor_update_freq == 0:
            for layer in self.layers.values():
                layer.update_factors(self.factor_decay)
        refresh = self.steps % self.inv_update_freq == 0
        for layer in self.layers.values():
            # A layer whose factors appeared since the last refresh gets a decomposition now rather
            # than going unpreconditioned until the next one.
            if layer.A is not None and (refresh or not layer.decomp):
                layer.update_decomposition(self.mode, self.damping)
        self.steps += 1

    @torch.no_grad()
    def step(self, lr: float | None = None) -> None:
        """Update factors and decompositions when due, then replace each layer's `.grad` by its
        preconditioned gradient. Layers without factors yet, or without gradients, are left alone."""
        self.update_curvature()
        updates = []
        for layer in self.layers.values():
            if not layer.decomp:
                continue
            v = layer.helper.grad_matrix(layer.dtype)
            if v is None:
                continue
            updates.append((layer, v, layer.precondition(v, self.mode, self.damping)))

        if self.kl_clip is not None and updates:
            lr = self.lr if lr is None else lr
            if lr is None:
                raise ValueError("KL clipping needs the learning rate: KFAC(..., lr=) or step(lr=)")
            device = updates[0][1].device
            vg = torch.stack([(p * v).sum().to(device, torch.float64) for _, v, p in updates]).sum()
            nu = torch.sqrt(self.kl_clip / (lr**2 * vg)).clamp(max=1.0)  # vg = 0 gives inf, then 1
            for _, _, p in updates:
                p.mul_(nu.to(p.device, p.dtype))

        for layer, _, p in updates:
            layer.helper.set_grad(p)

    # ---- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        layers = {}
        for name, layer in self.layers.items():
            if layer.A is None:
                continue
            layers[name] = {"A": layer.A.clone(), "G": layer.G.clone(),
                            **{k: v.clone() for k, v in layer.decomp.items()}}
        return {"steps": self.steps, "mode": self.mode, "layers": layers,
                "versions": {name: layer.version for name, layer in self.layers.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        unknown = sorted(set(state_dict["layers"]) - set(self.layers))
        if unknown:
            raise ValueError(f"K-FAC state has layers this model lacks: {', '.join(unknown)}")
        same_mode = state_dict.get("mode") == self.mode
        for name, layer in self.layers.items():
            layer.clear_accumulators()
            saved = state_dict["layers"].get(name)
            if saved is None:
                layer.A = layer.G = None
                layer.decomp = {}
                continue
            device = layer.helper.module.weight.device
            stack = (layer.members,) if layer.members else ()
            if saved["A"].shape != (*stack, *(layer.helper.a_dim,) * 2) or \
                    saved["G"].shape != (*stack, *(layer.helper.g_dim,) * 2):
                raise ValueError(f"K-FAC state for layer {name!r} has the wrong shape")
            layer.A = saved["A"].to(device, layer.dtype).clone()
            layer.G = saved["G"].to(device, layer.dtype).clone()
            # Decompositions of the other mode are dropped; the next step recomputes ours.
            layer.decomp = ({k: v.to(device, layer.dtype).clone() for k, v in saved.items() if k not in ("A", "G")}
                            if same_mode else {})
        for name, version in state_dict.get("versions", {}).items():
            if same_mode:  # (else the next step decomposes anew, a new version)
                self.layers[name].version = int(version)
        self.steps = int(state_dict["steps"])


# --------------------------------------------------------------------------------------------------
# Fisher sampling: losses whose gradients are the model's own score function, at targets drawn from
# the model, so that G estimates the true Fisher instead of the empirical one.


def gaussian_fisher_loss(mean: torch.Tensor, std: float | torch.Tensor = 1.0) -> torch.Tensor:
    """A regression head read as N(mean, std^2) (ACKTR's critic, std 1): targets y ~ N(mean, std^2)
    drawn without gradient, loss the mean over examples of sum_j (mean_j - y_j)^2 / (2 std^2).

    Its gradient w.r.t. the mean is (mean - y) / std^2, whose outer product averages to I / std^2,
    the Fisher of the Gaussian. The first dimension is the batch."""
    with torch.no_grad():
        target = mean + std * torch.randn_like(mean)
    per_elem = 0.5 * ((mean - target) / std) ** 2
    per_example = per_elem if per_elem.dim() <= 1 else per_elem.flatten(1).sum(1)
    return per_example.mean()


def policy_fisher_loss(dist: torch.distributions.Distribution) -> torch.Tensor:
    """Negative log-likelihood of actions sampled from the policy itself, averaged over the batch (ACKTR's
    actor). Per-dimension log-probabilities (e.g. a diagonal Normal not wrapped in Independent) are summed
    over the non-batch dimensions."""
    with torch.no_grad():
        action = dist.sample()
    logp = dist.log_prob(action)
    if logp.dim() > 1:
        logp = logp.flatten(1).sum(1)
    return -logp.mean()


__all__ = ["KFAC", "KFACLayer", "LinearHelper", "Conv2dHelper", "StackedLinear", "StackedLinearHelper",
           "gaussian_fisher_loss", "policy_fisher_loss"]
