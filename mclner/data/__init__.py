"""Data layer: readers, embedded sources, the relation grid, batching, lexicons and code-switching.

Submodules are imported on use (``from mclner.data.grid import ...``) so that importing the package
stays cheap.
"""
