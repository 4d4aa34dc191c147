"""Semantic segmentation on image folders: `data` (splits, classes, statistics), `train`, `evaluate`, `predict`.

Kept free of imports so that `segwise.tasks.semantic.<module>` loads only what that module needs.
"""
