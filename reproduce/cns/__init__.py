"""Qi 2025 (fetal CNS anomalies, ResNet-34) end to end: one small script per table and figure.

`python -m reproduce cns <target> --profile ci|default|paper [--cv kfold|lopo|loco]
[--select-on validation|test_fold] [--manifest M]` dispatches to `reproduce.cns.<target>.main`.
`pipeline` holds the study's spec (two tasks: 4 anomalies, and 4 anomalies + normal), its
flags, the test-fold-selection predictions and the patient-level aggregation; everything else
is the shared pipeline, reproduce/study.py.
"""
