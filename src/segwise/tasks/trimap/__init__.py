"""Trimap segmentation for matting (the trimap ViT): `config`, `train` on matting folders with the shared engine,
and `infer`: 0/128/255 trimaps and their evaluation per data set.

Kept free of imports so that `segwise.tasks.trimap.config` loads without the training stack.
"""
