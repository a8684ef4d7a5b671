"""Studies: what runs trainers many times and compares them.

Today `studies.compare` (`python -m studies.compare`): one TensorBoard tag's mean and spread over
seeds, for runs grouped by their config. Later: multi-seed grids and Optuna sweeps over the trainers.

The top floor of the house: it may import agents, gans and common; nothing below imports studies
(no trainer, nothing in optim, envs or common).
"""
