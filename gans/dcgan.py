"""DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks") with an Adam generator and an RMSprop discriminator.

    python -m gans.dcgan --dataset cifar10                  # downloads CIFAR-10 into --data-dir
    python -m gans.dcgan --dataset folder --data-dir PATH --image-size 64
    python -m gans.dcgan --dataset ring8                    # 2D mixture, small MLPs, a CPU minute
    python -m gans.dcgan --resume runs/RUN/checkpoint.pt --steps 200000
    python -m gans.sample runs/RUN/final.pt --n 64 --out grid.png
    tensorboard --logdir runs

Read top to bottom: the config (paper defaults, per-dataset presets), the networks, the loss, one
training iteration, the loop with checkpoints and logging, and `main()`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Annotated, Callable, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import lifecycle
from common.checks import (BELOW_ONE, NON_NEGATIVE, POSITIVE, check_fields, check_grad_accum, family_default,
                           fits_in_memory, limit)
from common.config import (OptimizerAidsConfig, PresetFloat, PresetInt, PresetStr, RunConfig, alias, describe_preset,
                           fill_preset)
from common.errors import fail
from common.precision import AmpConfig, AmpMode, Precision
from gans.data import MIXTURES


@dataclass
class Config(OptimizerAidsConfig, AmpConfig, RunConfig):
    """Train a DCGAN. Fields that say "preset" take the preset of the chosen --dataset (images or 2D mixture)
    unless typed. --eval CHECKPOINT scores a generator: modes and high-quality share for 2D mixtures, FID,
    IS and KID for images."""

    dataset: Literal["cifar10", "folder", "ring8", "grid25"] = "cifar10"
    """training data: CIFAR-10, a folder of images (--data-dir), or a 2D mixture of Gaussians (ring8: 8
    modes on a circle, grid25: 5x5 grid)"""
    data_dir: str = "data"
    """where CIFAR-10's cifar-10-batches-py/ is (or is downloaded to), or the folder of images for --dataset folder"""
    download: bool = True
    """download CIFAR-10 into --data-dir when it is not there"""
    image_size: Literal[32, 64] = 32
    """side of generated images; 64 adds one up/down-sampling block to each network"""
    steps: Annotated[PresetInt, POSITIVE] = None
    """generator steps to train for (images: 100,000; ring8: 6,000; grid25: 20,000)"""
    batch_size: Annotated[PresetInt, POSITIVE, limit(1 << 16, "a batch lives in memory at once")] = None
    """real and fake samples per discriminator step (images: 128, Radford et al.; 2D mixtures: 256)"""
    z_dim: Annotated[PresetInt, POSITIVE] = None
    """size of the generator's standard normal noise (images: 100, Radford et al.; 2D mixtures: 2, the
    data's own dimension, which keeps far more modes than 16)"""
    g_width: Annotated[PresetInt, POSITIVE] = None
    """generator width: feature maps of its last conv layer, doubled in each layer before (images: 64),
    or hidden units per layer (2D mixtures: 128)"""
    d_width: Annotated[PresetInt, POSITIVE] = None
    """discriminator width: feature maps of its first conv layer, doubled in each layer after (images:
    64), or hidden units per layer (2D mixtures: 128)"""
    mlp_layers: Annotated[int, POSITIVE, limit(1024, "one network's depth")] = 3
    """hidden layers of each MLP for 2D mixtures"""

    g_optimizer: str = "adam"
    """generator optimizer, any name in optim's registry (adam, rmsprop, rmsproptf, sgd, ...)"""
    g_lr: Annotated[PresetFloat, POSITIVE] = None
    """generator learning rate (images: 2e-4, Radford et al.; 2D mixtures: 1e-3)"""
    g_betas: Annotated[tuple[float, float] | None, BELOW_ONE] = None
    """generator betas, for optimizers that take them (default 0.5 0.999, Radford et al.; 0.0 0.999, the
    variant of later GAN work, kept 21.4 of grid25's 25 modes against 24.6 over 5 seeds:
    gans/README.md)"""
    d_optimizer: str = "rmsprop"
    """discriminator optimizer, any name in optim's registry"""
    d_lr: Annotated[PresetFloat, POSITIVE] = None
    """discriminator learning rate (images: 2e-4; 2D mixtures: 1e-3)"""
    d_alpha: Annotated[PresetFloat, BELOW_ONE] = None
    """discriminator RMSprop smoothing constant, for optimizers that take alpha (default 0.9)"""
    d_steps: Annotated[int, POSITIVE, limit(1 << 16, "each is a full discriminator step")] = 1
    """discriminator steps per generator step, each on a fresh real batch"""
    lr_schedule: PresetStr = None
    """learning-rate schedule of both networks over the generator steps, NAME[:key=value,...] with stages
    joined by ' then ' (python -m optim --schedules; plateau has no evaluation return to follow here)
    (images: constant, Radford et al.; 2D mixtures: linear to 0, which settles the generator onto the
    modes instead of circling them)"""
    grad_accum: int = 1
    """micro-batches per batch: each network's gradients are summed over K slices of --batch-size before
    its step, the same update with a K-th of the discriminator's activations in memory (exact for the
    2D mixtures' MLPs; BatchNorm in the image networks normalizes over each slice, as it would over a
    smaller batch)"""

    amp: AmpMode = "auto"
    """mixed precision: bf16 (autocast), fp16 (autocast and loss scaling, the scales kept in
    checkpoints), off (float32), or auto (bf16 where the GPU has it, else fp16; float32 on the CPU,
    where fp16 is refused; on CPUs with bfloat16 instructions, AVX512-BF16 or AMX, --amp bf16 runs 64x64
    images about 1.9x faster than float32)"""
    channels_last: bool = True
    """CUDA, images: channels-last memory format, faster convolutions on tensor cores; ignored otherwise"""
    workers: Annotated[int, NON_NEGATIVE, limit(256, "each is a process")] = 4
    """DataLoader processes decoding images for --dataset folder (at most the cores this process may use)"""

    log_interval: Annotated[int, POSITIVE, alias("--log-every")] = 100
    """generator steps between scalar logs (means over the interval)"""
    sample_interval: Annotated[PresetInt, POSITIVE, alias("--sample-every")] = None
    """generator steps between sample grids from the fixed noise, or scatter plots and mode metrics for
    2D mixtures (images: 1,000; 2D mixtures: 500)"""
    checkpoint_interval: Annotated[PresetInt, POSITIVE, alias("--save-every")] = None
    """generator steps between checkpoints, written atomically to the run folder's checkpoint.pt (images:
    5,000; 2D mixtures: 1,000)"""
    fidelity_interval: Annotated[int, NON_NEGATIVE, alias("--fidelity-every")] = 10_000
    """images: FID, IS and KID every N generator steps and at the end (needs pip install
    'rlgan[metrics]'); 0 turns them off"""
    fidelity_samples: Annotated[int, POSITIVE, limit(1_000_000, "they are generated and held at once")] = 10_000
    """generated (and real) images for FID, IS and KID"""
    inception_weights: str | None = None
    """local file of torch-fidelity's Inception weights, for machines that cannot download them"""

    # Flags renamed to the *_interval every trainer uses; the old ones stay aliases, and checkpoints of
    # earlier versions read under the new names.
    RENAMED: ClassVar[dict[str, str]] = {"log_every": "log_interval", "sample_every": "sample_interval",
                                         "save_every": "checkpoint_interval", "fidelity_every": "fidelity_interval"}


# Presets for the fields left at None. Images: Radford et al. 2016. 2D mixtures: settings that
# capture all modes of ring8 and grid25 on a CPU in a minute or two (see gans/README.md).
IMAGE_PRESET = dict(steps=100_000, batch_size=128, z_dim=100, g_width=64, d_width=64, g_lr=2e-4, d_lr=2e-4,
                    lr_schedule="constant", sample_interval=1000, checkpoint_interval=5000)
MIXTURE_PRESET = dict(steps=6000, batch_size=256, z_dim=2, g_width=128, d_width=128, g_lr=1e-3, d_lr=1e-3,
                      lr_schedule="linear", sample_interval=500, checkpoint_interval=1000)
PRESETS = {"cifar10": IMAGE_PRESET, "folder": IMAGE_PRESET, "ring8": MIXTURE_PRESET,
           "grid25": {**MIXTURE_PRESET, "steps": 20_000}}
DEFAULT_G_BETAS = (0.5, 0.999)
DEFAULT_D_ALPHA = 0.9

# Fields that fix the networks' shapes and the optimizers' state layout: a resumed run keeps them.
FIXED_ON_RESUME = ("dataset", "image_size", "z_dim", "g_width", "d_width", "mlp_layers", "g_optimizer",
                   "d_optimizer", "lr_mult", "optimizer_switch")


def _drivable(flag: str, optimizer: str) -> None:
    import optim  # torch only; imported here so that gans.sample never loads the optimizer registry

    try:
        optim.check_drivable(optimizer)
    except ValueError as e:
        fail(f"--{flag}: {e}")


def resolve(cfg: Config) -> Config:
    """Fill the None fields from the dataset's preset and check them (each field's declared rules, then
    what relates fields to each other); a bad one is a UserError."""
    cfg = fill_preset(cfg, PRESETS[cfg.dataset])
    if isinstance(cfg.amp, bool):  # a checkpoint of an earlier version, whose --amp/--no-amp was auto/off
        cfg.amp = "auto" if cfg.amp else "off"
    import optim

    _drivable("g-optimizer", cfg.g_optimizer)
    _drivable("d-optimizer", cfg.d_optimizer)
    family_default(cfg, "g_betas", DEFAULT_G_BETAS, cfg.g_optimizer, optim.accepts(cfg.g_optimizer, "betas"),
                   "betas", "optimizers that take them (adam, ...)")
    family_default(cfg, "d_alpha", DEFAULT_D_ALPHA, cfg.d_optimizer, optim.takes_rmsprop_alpha(cfg.d_optimizer),
                   "RMSprop alpha", "rmsprop and rmsproptf")
    cfg.g_betas = tuple(float(b) for b in cfg.g_betas) if cfg.g_betas is not None else None
    check_fields(cfg)
    # weights, gradients, and two optimizer states
    fits_in_memory(lambda: build_generator(cfg), copies=4, what="the generator (--g-width, --z-dim)")
    fits_in_memory(lambda: build_discriminator(cfg), copies=4, what="the discriminator (--d-width)")
    from common.optimizers import check_lr_schedule  # (optim: not for gans.sample)

    check_lr_schedule(cfg, cfg.steps, ("g_lr", "d_lr"))
    if cfg.optimizer_switch and "adam" not in (cfg.g_optimizer.lower(), cfg.d_optimizer.lower()):
        fail(f"--optimizer-switch {cfg.optimizer_switch} moves Adam to SGD (SWATS); neither --g-optimizer "
             f"{cfg.g_optimizer} nor --d-optimizer {cfg.d_optimizer} is Adam")
    if optim.schedules.parse(cfg.lr_schedule)[0][0] == "plateau":
        fail("--lr-schedule plateau follows an evaluation return, which a GAN has not; choose a step schedule")
    check_grad_accum(cfg, "batch_size")
    from common.precision import check_amp

    check_amp(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def init_weights(module: nn.Module) -> None:
    """Radford et al.: every weight from N(0, 0.02); BatchNorm scales from N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _blocks(image_size: int) -> int:
    """Stride-2 layers between 4x4 and the image: 3 for 32x32, 4 for 64x64."""
    return int(math.log2(image_size)) - 2


class Generator(nn.Module):
    """z -> 4x4 by a transposed conv, then stride-2 transposed convs halving the channels; tanh image.

    Convolutions before BatchNorm carry no bias: BatchNorm's shift makes it redundant.
    """

    def __init__(self, z_dim: int = 100, width: int = 64, image_size: int = 32, channels: int = 3):
        super().__init__()
        self.z_dim = z_dim
        n = _blocks(image_size)
        ch = width * 2 ** (n - 1)  # 256 at 32x32, 512 at 64x64 for width 64
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch),
                                   nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), self.z_dim, 1, 1))


class Discriminator(nn.Module):
    """Image -> stride-2 convs doubling the channels, LeakyReLU 0.2, BatchNorm but on the first layer,
    then a 4x4 conv to one logit per image. Logits, not probabilities: the loss applies the sigmoid,
    which is exact in float32 and safe under autocast.
    """

    def __init__(self, width: int = 64, image_size: int = 32, channels: int = 3):
        super().__init__()
        n = _blocks(image_size)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [nn.Conv2d(ch, 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


class MLPGenerator(nn.Module):
    """z -> 2D point, for the mixtures: ReLU hidden layers, linear output (the plane is unbounded)."""

    def __init__(self, z_dim: int = 16, width: int = 256, layers: int = 3, out_dim: int = 2):
        super().__init__()
        self.z_dim = z_dim
        mods: list[nn.Module] = []
        d = z_dim
        for _ in range(layers):
            mods += [nn.Linear(d, width), nn.ReLU(True)]
            d = width
        mods.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """2D point -> logit: LeakyReLU 0.2 hidden layers."""

    def __init__(self, width: int = 256, layers: int = 3, in_dim: int = 2):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers):
            mods += [nn.Linear(d, width), nn.LeakyReLU(0.2, True)]
            d = width
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def build_generator(cfg: Config) -> nn.Module:
    if cfg.dataset in MIXTURES:
        return MLPGenerator(cfg.z_dim, cfg.g_width, cfg.mlp_layers)
    return Generator(cfg.z_dim, cfg.g_width, cfg.image_size)


def build_discriminator(cfg: Config) -> nn.Module:
    if cfg.dataset in MIXTURES:
        return MLPDiscriminator(cfg.d_width, cfg.mlp_layers)
    return Discriminator(cfg.d_width, cfg.image_size)


# ---------------------------------------------------------------------------------------------
# Loss: the non-saturating GAN loss (Goodfellow et al. 2014, section 3)
# ---------------------------------------------------------------------------------------------


def d_loss_fn(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), from logits so that no sigmoid saturates to 0 or 1 and rounds badly."""
    real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits, dtype=torch.float))
    fake = F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits, dtype=torch.float))
    return real + fake


def g_loss_fn(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) rather than log(1 - D(G(z))): strong gradients while D still wins easily."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits, dtype=torch.float))


# ---------------------------------------------------------------------------------------------
# One training iteration
# ---------------------------------------------------------------------------------------------


@dataclass
class Models:
    """The two networks, their optimizers, and each one's precision (autocast and float16 loss scaling);
    `g` and `d` are what the training step calls: the networks, or their compiled forwards (--compile)."""

    G: nn.Module
    D: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    g_amp: Precision
    d_amp: Precision
    g: Callable | None = None
    d: Callable | None = None

    def __post_init__(self):
        self.g = self.G if self.g is None else self.g
        self.d = self.D if self.d is None else self.d

    def autocast(self):
        return self.g_amp.autocast()  # one dtype for both


def train_step(m: Models, next_real, batch_size: int, z_dim: int, device: torch.device, d_steps: int = 1,
               grad_accum: int = 1) -> torch.Tensor:
    """`d_steps` discriminator steps, then one generator step, each over the batch in `grad_accum`
    slices whose gradients add up (the losses are means: each slice's is weighted by its share).
    Returns a tensor [d_loss, g_loss, mean D(x), mean D(G(z))] left on the device: no host sync here.
    """
    for i in range(d_steps):
        real = next_real()
        z = torch.randn(batch_size, z_dim, device=device)
        last = i == d_steps - 1
        m.d_opt.zero_grad(set_to_none=True)
        fakes, d_stats = [], 0  # [d_loss, mean D(x), mean D(G(z))] summed over the slices
        for real_k, z_k in zip(real.chunk(grad_accum), z.chunk(grad_accum)):
            # the last fake batch is kept, with its graph, for the generator step: one G forward per iteration
            with m.autocast(), (nullcontext() if last else torch.no_grad()):
                fake = m.g(z_k)
            with m.autocast():
                real_logits = m.d(real_k)
                fake_logits = m.d(fake.detach())
            d_loss = d_loss_fn(real_logits, fake_logits) / grad_accum
            m.d_amp.backward(d_loss)
            with torch.no_grad():
                d_stats = d_stats + torch.stack([d_loss.detach(),
                                                 torch.sigmoid(real_logits.float()).mean() / grad_accum,
                                                 torch.sigmoid(fake_logits.float()).mean() / grad_accum])
            fakes.append(fake)
        m.d_amp.step(m.d_opt)

    # D's weights need no gradients in the generator step: skipping them saves a third of its backward
    m.D.requires_grad_(False)
    m.g_opt.zero_grad(set_to_none=True)
    g_total = 0
    for fake in fakes:
        with m.autocast():
            gen_logits = m.d(fake)
        g_loss = g_loss_fn(gen_logits) / grad_accum
        m.g_amp.backward(g_loss)
        g_total = g_total + g_loss.detach()
    m.g_amp.step(m.g_opt)
    m.D.requires_grad_(True)
    return torch.stack([d_stats[0], g_total, d_stats[1], d_stats[2]])


def build_models(cfg: Config, device: torch.device) -> Models:
    """Networks on `device` (channels-last on CUDA for images), optimizers by name from optim's registry."""
    import optim

    G, D = build_generator(cfg).to(device), build_discriminator(cfg).to(device)
    if device.type == "cuda" and cfg.channels_last and cfg.dataset not in MIXTURES:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    g_hp: dict = {"lr": cfg.g_lr}
    if cfg.g_betas is not None:
        g_hp["betas"] = cfg.g_betas
    d_hp: dict = {"lr": cfg.d_lr}
    if cfg.d_alpha is not None:
        d_hp["alpha"] = cfg.d_alpha
    from common.optimizers import param_groups

    params = param_groups(cfg, {"G": G, "D": D}, {"G": cfg.g_lr, "D": cfg.d_lr})

    def switch_of(name: str) -> str:  # --optimizer-switch moves whichever network's optimizer is Adam
        return cfg.optimizer_switch if name.lower() == "adam" else ""

    try:
        g_opt = optim.build(cfg.g_optimizer, params["G"], switch_of(cfg.g_optimizer), **g_hp)
    except ValueError as e:
        fail(f"--g-optimizer: {e}")
    try:
        d_opt = optim.build(cfg.d_optimizer, params["D"], switch_of(cfg.d_optimizer), **d_hp)
    except ValueError as e:
        fail(f"--d-optimizer: {e}")
    from common.compiled import compiled

    return Models(G, D, g_opt, d_opt, Precision.of(cfg.amp, device), Precision.of(cfg.amp, device),
                  compiled(G, cfg.compile), compiled(D, cfg.compile))


def set_hparams(m: Models, cfg: Config) -> None:
    """The config's betas and alpha, after loading optimizer state on resume, where changed flags then
    apply (changed learning rates scale the schedule: common.optimizers.lr_schedule)."""
    for group in m.g_opt.param_groups:
        if cfg.g_betas is not None and "betas" in group:
            group["betas"] = tuple(cfg.g_betas)
    for group in m.d_opt.param_groups:
        if cfg.d_alpha is not None and "alpha" in group:
            group["alpha"] = cfg.d_alpha


# ---------------------------------------------------------------------------------------------
# Samples and evaluation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(G: nn.Module, z: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """G(z) in eval mode (BatchNorm's running statistics, as gans.sample uses it), in float32."""
    was_training = G.training
    G.eval()
    try:
        return torch.cat([G(chunk).float() for chunk in z.split(batch)])
    finally:
        G.train(was_training)


def eval_noise(cfg: Config, n: int, device: torch.device) -> torch.Tensor:
    """Noise for evaluation from its own seeded generator: the same every time, and the training RNG
    stream is left untouched (so a resumed run matches an uninterrupted one)."""
    from common.seeding import EVAL_SEED_OFFSET

    g = torch.Generator().manual_seed(cfg.seed + EVAL_SEED_OFFSET)
    return torch.randn(n, cfg.z_dim, generator=g).to(device)


class Evaluator:
    """Logs samples and metrics: image grids and FID/IS/KID, or scatter plots and mode metrics."""

    def __init__(self, cfg: Config, run, source, device: torch.device):
        self.cfg, self.run, self.source, self.device = cfg, run, source, device
        self.fidelity_failed = False

    def samples(self, G: nn.Module, fixed_z: torch.Tensor, step: int) -> dict:
        from common.session import evaluated
        from gans import metrics
        from gans.data import mixture, scatter_image

        if self.cfg.dataset in MIXTURES:
            mix = mixture(self.cfg.dataset)
            points = generate(G, eval_noise(self.cfg, metrics.MIXTURE_SAMPLES, self.device))
            score = metrics.mixture_score(points, mix.means, mix.std)
            self.run.scalars({"metrics/modes": score.modes, "metrics/high_quality": score.high_quality}, step)
            self.run.writer.add_image("images/samples", scatter_image(points, mix), step)
            evaluated(step, float(score.modes))  # what a sweep's pruner follows
            return {"modes": score.modes, "high_quality": score.high_quality}
        import torchvision

        grid = torchvision.utils.make_grid(generate(G, fixed_z), nrow=8, normalize=True, value_range=(-1, 1))
        self.run.writer.add_image("images/samples", grid, step)
        return {}

    def fidelity(self, G: nn.Module, step: int) -> dict:
        """FID/IS/KID; when torch-fidelity cannot run, one message and training goes on."""
        from common.session import evaluated
        from gans import metrics
        from gans.data import real_images_uint8

        if self.fidelity_failed or self.cfg.dataset in MIXTURES or self.cfg.fidelity_interval == 0:
            return {}

        def give_up(reason: str) -> dict:
            self.fidelity_failed = True  # said once; the run goes on without them
            print(f"metrics: FID/IS/KID skipped for this run, training goes on: {reason}", file=sys.stderr)
            return {}

        missing = metrics.fidelity_missing()
        if missing:  # before generating thousands of images for nothing
            return give_up(missing)
        n = self.cfg.fidelity_samples
        fake = metrics.to_uint8(generate(G, eval_noise(self.cfg, n, self.device))).cpu()
        real = real_images_uint8(self.source, n)
        # torch-fidelity caches the real set's Inception statistics under this name: it must change with the data
        digest = hashlib.sha1(real.numpy().tobytes()).hexdigest()[:16]
        try:
            scores = metrics.fidelity(fake, real, cuda=self.device.type == "cuda",
                                      weights_path=self.cfg.inception_weights, real_cache_name=f"rlgan-real-{digest}")
        except metrics.FidelityUnavailable as e:
            return give_up(str(e))
        self.run.scalars({"metrics/fid": scores["fid"], "metrics/is": scores["is"], "metrics/kid": scores["kid"]},
                         step)
        evaluated(step, float(scores["is"]))
        return scores


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------

DIVERGED_HINT = ". Try lower learning rates (--g-lr, --d-lr) or --amp off"


class Interval:
    """The training figures since the last log, left on the device: the sums of train_step's
    [d_loss, g_loss, D(x), D(G(z))] and the first step whose figures were not finite (-1: none yet).
    The divergence guard reads that step at logs, samples and saves only: no host sync per step."""

    def __init__(self, device: torch.device):
        self.sums, self.steps = torch.zeros(4, device=device), 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, stats: torch.Tensor, step: int) -> None:
        self.sums += stats
        self.steps += 1
        fine = torch.isfinite(stats).all() | (self.first_bad >= 0)
        self.first_bad = torch.where(fine, self.first_bad, torch.full_like(self.first_bad, step))

    def check(self, session) -> None:
        """A loss that was not finite stops the run (exit 3) before anything more is logged, drawn or saved."""
        bad = int(self.first_bad)
        if bad >= 0:
            session.diverged("non-finite loss", bad, hint=DIVERGED_HINT)

    def log(self, session, step: int, lr: float, images_per_step: int) -> None:
        """The interval's means, images/s (training time only) and the learning rate; then a new interval."""
        self.check(session)
        sps = session.milestones.steps_per_second(step)  # generator steps/s
        d_loss, g_loss, d_real, d_fake = (self.sums / self.steps).tolist()
        session.run.scalars({"losses/d_loss": d_loss, "losses/g_loss": g_loss, "charts/d_real": d_real,
                             "charts/d_fake": d_fake, "charts/images_per_sec": sps * images_per_step,
                             "charts/learning_rate": lr}, step)
        session.progress.update(step, sps, img_s=f"{sps * images_per_step:.0f}", d_loss=f"{d_loss:.3f}",
                                g_loss=f"{g_loss:.3f}")
        session.say_time_left(step)
        self.sums.zero_()
        self.steps = 0


def fit(cfg: Config, saved: dict | None = None) -> dict:
    """Train from scratch, or from checkpoint `saved` (already loaded, `cfg` already merged with it).

    Returns the last evaluation (mode metrics for 2D mixtures, FID/IS/KID where computed) and paths.
    """
    # the training stack: imported here so that gans.sample can rebuild a generator without it
    from common.device import pick
    from common.seeding import seed_everything
    from common.session import Session
    from common.state import RNG, Counters, RunState, Tensor
    from gans.data import make_source

    device = pick(cfg.device)
    seed_everything(cfg.seed)
    images = cfg.dataset not in MIXTURES
    source = make_source(cfg.dataset, cfg.data_dir, cfg.batch_size, device, cfg.seed, cfg.image_size,
                         cfg.download, cfg.workers, images and device.type == "cuda" and cfg.channels_last)
    m = build_models(cfg, device)
    fixed_z = Tensor(torch.randn(64, cfg.z_dim).to(device))  # the 8x8 grid: the same noise all run long
    c, interval, last = Counters(step=0, images_seen=0), Interval(device), {}
    state = RunState(G=m.G, D=m.D, g_opt=m.g_opt, d_opt=m.d_opt, g_scaler=m.g_amp, d_scaler=m.d_amp,
                     fixed_z=fixed_z, rng=RNG(), data=source, counters=c)

    def weights():  # what must be finite to be saved; a loss that was not stops the run first
        interval.check(session)
        return [*m.G.parameters(), *m.D.parameters()]

    session = Session(cfg, "dcgan", cfg.dataset, state, saved, evaluate=None, weights=weights, best=False,
                      budget="steps", intervals={"log": cfg.log_interval, "checkpoint": cfg.checkpoint_interval,
                                                 "sample": cfg.sample_interval, "fidelity": cfg.fidelity_interval},
                      announce=describe_preset(cfg.dataset, PRESETS[cfg.dataset], cfg),
                      resume_note=f"{cfg.dataset} on {device}, to step {cfg.steps}")
    if saved is not None:
        set_hparams(m, cfg)
        if "lr_schedule" not in saved["config"] and "lr_decay" in saved["config"]:  # an earlier version's flag
            cfg.lr_schedule = "linear" if saved["config"]["lr_decay"] == "linear" else "constant"
    schedule = session.lr_schedule([m.g_opt, m.d_opt], cfg.steps, ("g_lr", "d_lr"), done=c.step)
    with session.open(c.step):
        evaluator = Evaluator(cfg, session.run, source, device)
        if saved is None:
            print(f"training {cfg.dataset} on {device} to step {cfg.steps}: {session.folder}", file=sys.stderr)
        while c.step < cfg.steps and not session.stop:
            lr = m.g_opt.param_groups[0]["lr"]
            stats = train_step(m, source.next, cfg.batch_size, cfg.z_dim, device, cfg.d_steps, cfg.grad_accum)
            schedule.step()
            c.step += 1
            session.updates_began(c.step)  # the first step (allocation, compilation) is not in the final steps/s
            c.images_seen += cfg.batch_size * cfg.d_steps
            interval.add(stats, c.step)
            end = c.step == cfg.steps  # the last step logs, draws and scores whatever the intervals
            if session.due("log", c.step) or end:
                interval.log(session, c.step, lr, cfg.batch_size * cfg.d_steps)
            with session.paused():  # images/s counts training time, not samples, scores and saves
                if session.due("sample", c.step) or end:
                    interval.check(session)
                    last.update(evaluator.samples(m.G, fixed_z.tensor, c.step))
                if images and cfg.fidelity_interval and (session.due("fidelity", c.step) or end):
                    interval.check(session)
                    last.update(evaluator.fidelity(m.G, c.step))
                if session.due("checkpoint", c.step):
                    session.checkpoint(c.step)
        final = session.finish(c.step, {f"hparams/{k}": float(v) for k, v in last.items()
                                        if isinstance(v, (int, float))})
    summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items())
    print(f"done: step {c.step}{', ' + summary if summary else ''}; checkpoint {final}", file=sys.stderr)
    return {**last, "step": c.step, "folder": str(session.folder), "final": str(final)}


def run_eval(cfg: Config, ckpt: dict) -> dict:
    """--eval: score the checkpoint's generator (as `Evaluator` does during training) and print it."""
    from common.device import pick

    device = pick(cfg.device)
    G = build_generator(cfg).to(device)
    try:
        G.load_state_dict(ckpt["G"])
    except (KeyError, RuntimeError) as e:
        fail(f"{cfg.eval}: the generator's weights do not fit its config ({str(e).splitlines()[0][:160]})")
    if cfg.dataset in MIXTURES:
        from gans import metrics
        from gans.data import mixture

        mix = mixture(cfg.dataset)
        points = generate(G, eval_noise(cfg, metrics.MIXTURE_SAMPLES, device))
        score = metrics.mixture_score(points, mix.means, mix.std)
        print(f"{cfg.dataset}: {metrics.MIXTURE_SAMPLES} samples, {score.modes} of {len(mix.means)} modes, "
              f"{score.high_quality:.1f}% high quality")
        return {"modes": score.modes, "high_quality": score.high_quality}
    from gans.data import make_source

    source = make_source(cfg.dataset, cfg.data_dir, cfg.batch_size, device, cfg.seed, cfg.image_size,
                         cfg.download, cfg.workers, False)
    from gans import metrics

    missing = metrics.fidelity_missing()
    if missing:
        fail(f"--eval of an image GAN scores FID/IS/KID, which cannot run here: {missing}")
    # scored whatever --fidelity-every the run trained with
    evaluator = Evaluator(dataclasses.replace(cfg, fidelity_interval=1), _NoRun(), source, device)
    scores = evaluator.fidelity(G, int(ckpt["step"]))
    if not scores:
        fail("FID/IS/KID could not be computed (the reason is the line above)")
    print(f"{cfg.dataset}: {cfg.fidelity_samples} samples, FID {scores['fid']:.2f}, IS {scores['is']:.2f}, "
          f"KID {scores['kid']:.4f}")
    return scores


class _NoRun:
    """Stands in for the run's writer when --eval only prints."""

    def scalars(self, values: dict, step: int) -> None:
        pass


TRAINER = lifecycle.Trainer(
    config_cls=Config, kind="dcgan", prog="python -m gans.dcgan", description=__doc__.split("\n\n")[0],
    prepare=resolve, train=fit, run_eval=run_eval, fixed_on_resume=FIXED_ON_RESUME,
    budget="steps", progress=lambda ckpt: int(ckpt["step"]),
    canonical=lambda name, value: value.lower() if name.endswith("_optimizer") else value,
)


def train(cfg: Config) -> lifecycle.Result:
    """Train from Python: `train(Config(...))` checks `cfg` as the command line does (fields left unset take
    the preset), trains in this process and returns the run folder, final.pt and the evaluations."""
    return lifecycle.train(TRAINER, cfg)


def main(args: list[str] | None = None) -> dict:
    return lifecycle.main(TRAINER, args)


if __name__ == "__main__":
    main()
