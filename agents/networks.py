"""Networks several agents share."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class NatureCNN(nn.Module):
    """The torso of Mnih et al. (2015): 3 convolutions and a 512-unit layer over 4 stacked 84x84 frames.

    Takes uint8 frames and scales them to [0, 1] itself, so replay and env keep bytes. Weights and
    activations are kept channels-last: oneDNN's CPU convolutions run this network's update about
    30% faster so (measured against the NCHW layout by an earlier bench/dqn_speed.py), and cuDNN
    prefers the layout too.

    `out_features=None`: the convolutions only (3,136 features), for heads of their own (Rainbow's
    dueling streams).
    """

    def __init__(self, in_channels: int = 4, out_features: int | None = 512):
        super().__init__()
        layers = [
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        ]
        if out_features is not None:
            layers += [nn.Linear(64 * 7 * 7, out_features), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_features = out_features or 64 * 7 * 7
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last).float() / 255.0)


class MLP(nn.Module):
    """Fully connected layers for vector observations (ReLU, or `activation`, e.g. nn.Tanh for PPO)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (120, 84), activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        self.net = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float())


class DataEfficientCNN(nn.Module):
    """The smaller torso of data-efficient Rainbow (van Hasselt et al. 2019, their hyper-parameter
    table): two 5x5 convolutions of stride 5 (32 and 64 channels) over 4 stacked 84x84 frames, 576
    features."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, stride=5), nn.ReLU(),
            nn.Conv2d(32, 64, 5, stride=5), nn.ReLU(),
            nn.Flatten(),
        )
        self.out_features = 64 * 3 * 3
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last).float() / 255.0)


class NoisyLinear(nn.Module):
    """A linear layer with factorised Gaussian noise on its weights (Fortunato et al. 2018, "Noisy
    Networks for Exploration", section 3.2): w = mu_w + sigma_w * (f(e_out) f(e_in)^T), b = mu_b +
    sigma_b * f(e_out), f(x) = sign(x) sqrt(|x|), mu ~ U[-1/sqrt(p), 1/sqrt(p)], sigma = sigma0/sqrt(p)
    for p inputs. `reset_noise()` draws new e_in, e_out; in eval mode the layer is its mean (noise off).

    The noisy part is computed as ((x * f(e_in)) sigma_w^T) * f(e_out): the same product as with the
    full weight matrix, without building it.
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features), persistent=False)
        self.register_buffer("eps_out", torch.zeros(out_features), persistent=False)
        self.reset_noise()

    def reset_noise(self) -> None:
        for eps in (self.eps_in, self.eps_out):
            eps.normal_()
            eps.copy_(eps.sign() * eps.abs().sqrt_())  # f(x) = sign(x) sqrt(|x|)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = F.linear(x, self.weight_mu, self.bias_mu)
        if not self.training:
            return mean
        return mean + (F.linear(x * self.eps_in, self.weight_sigma) + self.bias_sigma) * self.eps_out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def torso_for(obs_shape: tuple[int, ...], hidden: tuple[int, ...] = (120, 84)) -> nn.Module:
    """Nature CNN for image stacks (C, 84, 84), an MLP for flat vectors."""
    if len(obs_shape) == 3:
        return NatureCNN(obs_shape[0])
    if len(obs_shape) == 1:
        return MLP(obs_shape[0], hidden)
    raise ValueError(f"no standard network for observations of shape {obs_shape}")


def orthogonal_init(module: nn.Module, gain: float = 2 ** 0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with `gain` and constant biases for every Linear and Conv2d in `module`: the
    initialisation of OpenAI Baselines' policies that PPO's results depend on (Huang et al. 2022, detail 2)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not m.weight.is_meta:  # meta: sized, never filled
            # into a contiguous copy first: orthogonal_ cannot view a channels-last weight
            weight = torch.empty(m.weight.shape, dtype=m.weight.dtype, device=m.weight.device)
            with torch.no_grad():
                m.weight.copy_(nn.init.orthogonal_(weight, gain))
                m.bias.fill_(bias)
    return module
