"""Sketch part segmentation (ContextSeg): `config`, the LightningModules of both stages in `module`, `train`
(stage 1 stroke autoencoder, stage 2 context transformer), `infer` (prepare, evaluate, predict) and `draw`.

Kept free of imports so that `segwise.tasks.sketch.config` loads without the training stack.
"""
