"""Triton kernels of mclner, installed as the subpackage ``mclner.kernels``.

One module per op (biaffine, cln_head, info_nce): the Triton kernels, their launchers and one
torch.autograd.Function. Importing this package does not import triton; the op modules do.
"""
