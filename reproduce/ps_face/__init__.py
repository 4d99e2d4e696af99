"""Shen 2024 (Williams-Beuren / Noonan / Alagille / no syndrome from children's faces, IResNet
with ArcFace or CosFace, with and without a pretrained face model) end to end.

`python -m reproduce ps_face <target> --profile ci|default|paper [--manifest M]
[--pretrained-weights B.keras]` dispatches to `reproduce.ps_face.<target>.main`. `pipeline`
holds the study's four specs (one per model) and its folds; `pretrain` the phantom's
face-recognition pretraining; `tables` the comparison, confusion matrices and round trip;
everything else is the shared pipeline, reproduce/study.py.
"""
