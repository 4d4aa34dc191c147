"""Vector sketches with a part label per stroke (ContextSeg's data): readers, the prepared-set cache, rasteriser and
augmentation, procedural sketches, and the datasets that feed both training stages.

Import from the modules: `formats` (Sketch, readers), `cache`, `raster`, `synthetic`, `datasets`.
"""
