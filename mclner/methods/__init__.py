"""Cross-lingual NER methods on one engine. Each method is a folder here registering a
:class:`mclner.methods.base.Method`; ``mclner methods`` lists them (docs/DESIGN.md: adding a method)."""

from mclner.methods.base import (
    Context,
    Method,
    NERModel,
    Stage,
    get_method,
    option,
    register,
    registry,
)

# Built-in methods register themselves on import (order = listing order).
from mclner.methods import mclner as _mclner  # noqa: E402,F401  isort: skip
from mclner.methods import token_classification as _token_classification  # noqa: E402,F401  isort: skip
from mclner.methods import concner as _concner  # noqa: E402,F401  isort: skip
from mclner.methods import dlbri as _dlbri  # noqa: E402,F401  isort: skip

__all__ = ["Context", "Method", "NERModel", "Stage", "get_method", "option", "register", "registry"]
