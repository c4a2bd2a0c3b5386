"""What precision a computation really runs in, read from its jaxpr (shared by the bf16 tests)."""

from collections import Counter

import jax
from jax.extend.core import ClosedJaxpr, Jaxpr

# The operations that carry a model's arithmetic: matrix products and convolutions.
_CONTRACTIONS = ("dot_general", "conv_general_dilated")


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, Jaxpr):
                yield item


def contraction_dtypes(fn, *args, **kwargs) -> Counter:
    """Counts of the input dtypes of every matrix product / convolution `fn(*args, **kwargs)` traces to,
    sub-computations (jit, scan, custom_vjp, ...) included: e.g. Counter({'bfloat16': 12, 'float32': 1})."""
    counts = Counter()

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in _CONTRACTIONS:
                counts[str(eqn.invars[0].aval.dtype)] += 1
            for sub in _sub_jaxprs(eqn.params):
                visit(sub)

    visit(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args).jaxpr)
    return counts
