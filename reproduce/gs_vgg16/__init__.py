"""Hong 2021 (genetic syndromes from children's face photos, VGG-16) end to end.

`python -m reproduce gs_vgg16 <target> --profile ci|default|paper [--manifest M]
[--init-weights VGG_FACE.h5]` dispatches to `reproduce.gs_vgg16.<target>.main`. `pipeline`
holds the study's spec (healthy vs syndrome, five folds 3:1:1 on the child, faces aligned by
MTCNN) and its per-fold metrics; everything else is the shared pipeline, reproduce/study.py.
"""
