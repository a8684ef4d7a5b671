"""PyTorch's DCGAN example (pytorch/examples, dcgan/main.py) as its script runs, for bench/dcgan_speed.py.

    python bench/pytorch_dcgan.py --dataroot DIR [--workers 2] [--batch-size 64] [--image-size 64] [--niter 1]

What a user of the example runs on a folder of images, written out here so that the bench can time it beside
our trainer in the same run. It follows the script's parts and order, not ours:
- data: torchvision's ImageFolder (Resize, CenterCrop, ToTensor, Normalize to [-1, 1]) in a DataLoader with
  shuffling and `--workers` worker processes (the example's default 2), batches moved to the device per
  iteration;
- networks: the example's 64x64 generator (ConvTranspose2d-BatchNorm-ReLU, Tanh) and discriminator
  (Conv2d-BatchNorm-LeakyReLU 0.2, a Sigmoid output) with ngf = ndf = 64, nz = 100, weights N(0, 0.02)
  (BatchNorm's N(1, 0.02), bias 0);
- update: nn.BCELoss on the sigmoid's output; D's gradient from the real batch (label 1) then from
  G(z).detach() (label 0), one Adam step (lr 2e-4, betas (0.5, 0.999)); G's from D(G(z)) with label 1
  (D's weight gradients computed too), one Adam step; three `.item()` reads for D(x) and D(G(z)), and a
  printed line per iteration with two more;
- output: the real batch and G(fixed noise) saved as image grids every 100 iterations, both networks'
  state dicts after every epoch.
Left out: the dataset choices other than `folder` and `fake`, --netG/--netD (loading weights), multi-GPU
data_parallel (one device here). `--accel` as the example's (cuda when available); `--device` is the
same choice spelled as the other benches spell it. Timers are the only addition: prints `SPS after
learning starts: X` (iterations per second after the first, which warms up the loader and allocator) and
the wall time of the loop.
"""
from __future__ import annotations

import argparse
import os
import random
import time

import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data
import torchvision.datasets as dset
import torchvision.transforms as transforms
import torchvision.utils as vutils


def weights_init(m):
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class Discriminator(nn.Module):
    def __init__(self, ndf: int, nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="folder", choices=["folder", "fake"])
    p.add_argument("--dataroot", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--niter", type=int, default=1, help="epochs")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--beta1", type=float, default=0.5)
    p.add_argument("--outf", default=".")
    p.add_argument("--manual-seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu or cuda (default: the example's --accel choice)")
    p.add_argument("--accel", action="store_true")
    opt = p.parse_args()
    print(opt)
    os.makedirs(opt.outf, exist_ok=True)
    seed = opt.manual_seed if opt.manual_seed is not None else random.randint(1, 10000)
    print("Random Seed: ", seed)
    random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True
    if opt.device:
        device = torch.device(opt.device)
    else:
        device = torch.device("cuda" if opt.accel and torch.cuda.is_available() else "cpu")
    print(f"Using device: {device}")

    if opt.dataset == "folder":
        dataset = dset.ImageFolder(root=opt.dataroot, transform=transforms.Compose([
            transforms.Resize(opt.image_size), transforms.CenterCrop(opt.image_size), transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    else:
        dataset = dset.FakeData(image_size=(3, opt.image_size, opt.image_size), transform=transforms.ToTensor())
    nc = 3
    loader = torch.utils.data.DataLoader(dataset, batch_size=opt.batch_size, shuffle=True, num_workers=opt.workers)

    netG = Generator(opt.nz, opt.ngf, nc).to(device)
    netG.apply(weights_init)
    print(netG)
    netD = Discriminator(opt.ndf, nc).to(device)
    netD.apply(weights_init)
    print(netD)
    criterion = nn.BCELoss()
    fixed_noise = torch.randn(opt.batch_size, opt.nz, 1, 1, device=device)
    real_label, fake_label = 1, 0
    optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))

    t_loop = time.perf_counter()
    t_first, iterations = None, 0
    for epoch in range(opt.niter):
        for i, data in enumerate(loader, 0):
            # D: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            real = data[0].to(device)
            batch_size = real.size(0)
            label = torch.full((batch_size,), real_label, dtype=real.dtype, device=device)
            output = netD(real)
            errD_real = criterion(output, label)
            errD_real.backward()
            D_x = output.mean().item()

            noise = torch.randn(batch_size, opt.nz, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            D_G_z1 = output.mean().item()
            errD = errD_real + errD_fake
            optimizerD.step()

            # G: maximize log(D(G(z)))
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            D_G_z2 = output.mean().item()
            optimizerG.step()

            print("[%d/%d][%d/%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f D(G(z)): %.4f / %.4f"
                  % (epoch, opt.niter, i, len(loader), errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
            if i % 100 == 0:
                vutils.save_image(real, f"{opt.outf}/real_samples.png", normalize=True)
                fake = netG(fixed_noise)
                vutils.save_image(fake.detach(), f"{opt.outf}/fake_samples_epoch_{epoch:03d}.png", normalize=True)
            iterations += 1
            if t_first is None:
                t_first = time.perf_counter()
        torch.save(netG.state_dict(), f"{opt.outf}/netG_epoch_{epoch}.pth")
        torch.save(netD.state_dict(), f"{opt.outf}/netD_epoch_{epoch}.pth")
    end = time.perf_counter()
    print(f"loop_s={end - t_loop:.2f} iterations={iterations}")
    print(f"SPS after learning starts: {(iterations - 1) / max(end - t_first, 1e-9):.3f}")


if __name__ == "__main__":
    main()
