"""The model zoo: one Keras 3 builder per architecture, reached through `models.registry.build`.

resnet.py (ResNet-18/34, Pgds-ResNet), vgg.py (VGG-16/19), vgg_face.py (Hong 2021's face
VGG-16), iresnet.py (IResNet-100), margins.py (ArcFace/CosFace/cosine classifier), weights.py
(loading a user's weights file). Nothing here imports data_prep or reproduce.
"""
