"""GAN trainers: DCGAN on CIFAR-10, image folders and 2D mixtures (`python -m gans.dcgan`), sampling from a
checkpoint (`python -m gans.sample`), and their metrics. Depends on optim, common and torchvision; never on
agents or envs.
"""
