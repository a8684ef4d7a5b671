"""Networks several agents share."""
from __future__ import annotations

import torch
from torch import nn


class NatureCNN(nn.Module):
    """The torso of Mnih et al. (2015): 3 convolutions and a 512-unit layer over 4 stacked 84x84 frames.

    Takes uint8 frames and scales them to [0, 1] itself, so replay and env keep bytes. Weights and
    activations are kept channels-last: oneDNN's CPU convolutions run this network's update about
    30% faster so (bench/dqn_speed.py), and cuDNN prefers the layout too.
    """

    def __init__(self, in_channels: int = 4, out_features: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, out_features), nn.ReLU(),
        )
        self.out_features = out_features
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
