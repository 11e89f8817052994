"""Data layer: sentences and their readers, embedded sources, IOB2 and label maps, batching, lexicons,
translations and code-switching (no model code).

Submodules are imported on use (``from mclner.data.iob2 import ...``) so that importing the package
stays cheap.
"""
