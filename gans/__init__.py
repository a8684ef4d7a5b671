"""GAN trainers: DCGAN on CIFAR-10, image folders and 2D mixtures (`python -m gans.dcgan`), sampling from a
checkpoint (`python -m gans.sample`), and their metrics. Depends on optim, common and torchvision; never on
agents or envs.
"""


def load(path, device: str = "auto"):
    """A DCGAN checkpoint's generator: `gans.load(path).sample(n)` (gans.sample.Generator)."""
    from gans.sample import load_dcgan

    return load_dcgan(path, device)
