"""Double backward through the fused ops is refused with a clear error.

The fused backward passes (native CPU, CUDA, Triton) compute gradients outside autograd, so a
gradient of a gradient through them would be silently wrong or None. ``torch.autograd.function.
once_differentiable`` alone does not catch every case: it only trips when the incoming gradient itself
requires grad, and its error node does not lie on the path to the op's inputs, so
``autograd.grad(..., inputs, allow_unused=True)`` skips it and returns None. Here the returned
gradients are tied to an error node whose inputs are the op's own differentiable inputs: any second
derivative that reaches back to one of them, or to the upstream gradient (itself an input of the
second-order graph), runs that node and raises.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Type, TypeVar

import torch

FnT = TypeVar("FnT", bound=Type[torch.autograd.Function])


def double_backward_message(op: str) -> str:
    return (
        f"{op}: the fused implementations (cpu, triton, cuda) do not support double backward (a gradient "
        f"of a gradient, e.g. create_graph=True followed by another backward); use impl='reference' for "
        f"higher-order derivatives"
    )


class _DoubleBackwardError(torch.autograd.Function):
    """Identity on the first-order gradients; its backward raises. Extra inputs (the op's inputs that
    require grad) only put this node on every path from the gradients back to them."""

    @staticmethod
    def forward(ctx, op: str, n: int, *tensors: torch.Tensor):  # type: ignore[override]
        ctx.op = op
        # detach(): a fresh alias, so autograd neither treats it as an input nor as a view of one.
        return tuple(t.detach() for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads: Any):  # type: ignore[override]
        raise RuntimeError(double_backward_message(ctx.op))


def _guard(op: str, anchors: tuple, grads: Any) -> Any:
    single = not isinstance(grads, tuple)
    items = (grads,) if single else grads
    idx = [k for k, g in enumerate(items) if isinstance(g, torch.Tensor)]
    if not idx or not anchors:
        return grads
    wrapped = _DoubleBackwardError.apply(op, len(idx), *(items[k] for k in idx), *anchors)
    out = list(items)
    for k, w in zip(idx, wrapped):
        out[k] = w
    return out[0] if single else tuple(out)


def no_double_backward(op: str) -> Callable[[FnT], FnT]:
    """Class decorator for a fused op's ``torch.autograd.Function``.

    The backward runs without building a graph (as with ``once_differentiable``); when it runs under
    ``create_graph=True`` and some input of the op requires grad, differentiating the returned
    gradients again raises ``RuntimeError`` naming the op, whichever input the second derivative is
    taken for (``allow_unused=True`` included). Plain first-order backward pays nothing.
    """

    def decorate(cls: FnT) -> FnT:
        forward, backward = cls.forward, cls.backward

        @functools.wraps(forward)
        def guarded_forward(ctx, *args, **kwargs):
            # The op's own inputs (not detached copies): their graph leads to every leaf upstream.
            ctx.double_backward_anchors = tuple(
                a for a in args if isinstance(a, torch.Tensor) and a.requires_grad
            )
            return forward(ctx, *args, **kwargs)

        @functools.wraps(backward)
        def guarded_backward(ctx, *grad_outputs):
            with torch.no_grad():
                grads = backward(ctx, *grad_outputs)
            if not torch.is_grad_enabled():  # create_graph=False: the usual case
                return grads
            # The upstream gradient is an input of the second-order graph too: a derivative taken
            # for whatever it depends on (a weight w in (S * w).sum()) must raise as well.
            upstream = tuple(g for g in grad_outputs if isinstance(g, torch.Tensor) and g.requires_grad)
            return _guard(op, ctx.double_backward_anchors + upstream, grads)

        cls.forward = staticmethod(guarded_forward)  # type: ignore[assignment]
        cls.backward = staticmethod(guarded_backward)  # type: ignore[assignment]
        return cls

    return decorate
