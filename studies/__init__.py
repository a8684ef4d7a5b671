"""Studies: what runs trainers many times and compares them.

- `studies.compare`: one TensorBoard tag's mean and spread over seeds, for runs grouped by config.
- `studies.grid`: every (setting, seed) as a run of the real trainer, resumably, and a report with
  rliable's interval estimates (`studies.stats`).
- `studies.sweep`: Optuna sweeps over a trainer's optimizer and hyper-parameters, over seeds, on
  shared storage.
- `studies.claims`: the sources' optimizer claims, each a grid with a verdict.

The top floor of the house: it may import agents, gans and common; nothing below imports studies
(no trainer, nothing in optim, envs or common).
"""
