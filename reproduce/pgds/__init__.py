"""Tang 2023 (Pgds-ResNet) end to end: one small script per table and figure.

`python -m reproduce pgds <target> --profile ci|default|paper [--manifest M] [--readers R]`
dispatches to `reproduce.pgds.<target>.main`; each module also runs alone
(`python -m reproduce.pgds.table1 ...`). `pipeline` holds what they share: the prepared data
(phantom -> de-identified copy -> case-level split -> leakage audit), the four trained models
(trained once under a git-ignored `runs/` folder and reused by every target), predictions,
the operating threshold, reader calls and the atomic writers of `results/pgds/`.
"""
