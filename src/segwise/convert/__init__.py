"""Importers of other systems' weights and configs into segwise model files (one module per source system)."""
