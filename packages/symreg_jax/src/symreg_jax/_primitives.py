"""The token vocabulary: operators with arity and protected semantics, variables, a constant.

Token ids of a `PrimitiveSet`: ``0`` is padding, then the operators in the order given, then the
variables ``x0 .. x{n_vars-1}``, then one constant token ``c`` whose value lives in a parallel
float array. Two extra ids (``mask``, ``vocab_size``; ``sep``, ``vocab_size + 1``) exist only for
the BERT models.

Protected semantics (identical in the fast evaluator, the numpy reference and `to_jax_function`):

======  =====================================================================
div     ``a / b`` if ``|b| > 1e-6`` else ``1``
log     ``log(|a|)`` if ``|a| > 1e-6`` else ``0``
sqrt    ``sqrt(|a|)``
exp     ``exp(min(a, 30))``
others  plain math (add, sub, mul, neg, sin, cos, square, cube)
======  =====================================================================

Sympy/LaTeX export uses the unprotected functions (``a/b``, ``log(a)``, ``sqrt(a)``,
``exp(a)``): identical wherever the guard is inactive, which is the domain a fit is judged on.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import sympy

_EPS = 1e-6
_EXP_MAX = 30.0


def _safe_div(xp: Any, a: Any, b: Any) -> Any:
    ok = xp.abs(b) > _EPS
    return xp.where(ok, a / xp.where(ok, b, 1.0), 1.0)


def _safe_log(xp: Any, a: Any) -> Any:
    ok = xp.abs(a) > _EPS
    return xp.where(ok, xp.log(xp.where(ok, xp.abs(a), 1.0)), 0.0)


def _safe_sqrt(xp: Any, a: Any) -> Any:
    # sqrt(|a|) with a gradient that stays finite at 0.
    ok = xp.abs(a) > _EPS
    return xp.where(ok, xp.sqrt(xp.where(ok, xp.abs(a), 1.0)), 0.0)


@dataclasses.dataclass(frozen=True)
class Operator:
    """An operator: its arity, array semantics (for `xp` = numpy or jax.numpy) and sympy form."""

    name: str
    arity: int
    fn: Callable[..., Any]  # fn(xp, *args)
    sym: Callable[..., Any]  # sym(*sympy_args)
    latex_free: bool = True


OPERATORS: dict[str, Operator] = {
    "add": Operator("add", 2, lambda xp, a, b: a + b, lambda a, b: a + b),
    "sub": Operator("sub", 2, lambda xp, a, b: a - b, lambda a, b: a - b),
    "mul": Operator("mul", 2, lambda xp, a, b: a * b, lambda a, b: a * b),
    "div": Operator("div", 2, _safe_div, lambda a, b: a / b),
    "sin": Operator("sin", 1, lambda xp, a: xp.sin(a), sympy.sin),
    "cos": Operator("cos", 1, lambda xp, a: xp.cos(a), sympy.cos),
    "exp": Operator("exp", 1, lambda xp, a: xp.exp(xp.minimum(a, _EXP_MAX)), sympy.exp),
    "log": Operator("log", 1, _safe_log, sympy.log),
    "sqrt": Operator("sqrt", 1, _safe_sqrt, sympy.sqrt),
    "neg": Operator("neg", 1, lambda xp, a: -a, lambda a: -a),
    "square": Operator("square", 1, lambda xp, a: a * a, lambda a: a**2),
    "cube": Operator("cube", 1, lambda xp, a: a * a * a, lambda a: a**3),
}

DEFAULT_OPERATORS = ("add", "sub", "mul", "div", "sin", "cos", "exp", "log")


@dataclasses.dataclass(frozen=True)
class PrimitiveSet:
    """Static description of the expression language (hashable: safe as a jit static argument).

    Args:
      operators: operator names from `OPERATORS`.
      n_vars: number of input variables ``x0 ..``.
      max_len: fixed length of every token array (the size limit of an expression).
      use_constants: whether the constant token may appear in generated expressions.
    """

    operators: tuple[str, ...] = DEFAULT_OPERATORS
    n_vars: int = 1
    max_len: int = 32
    use_constants: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.operators, tuple):
            object.__setattr__(self, "operators", tuple(self.operators))
        unknown = [o for o in self.operators if o not in OPERATORS]
        if unknown or not self.operators:
            raise ValueError(
                f"operators: expected a non-empty subset of {sorted(OPERATORS)}, got {unknown}"
            )
        if len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators: duplicates in {self.operators}")
        if not isinstance(self.n_vars, int) or self.n_vars < 1:
            raise ValueError(f"n_vars: expected an int >= 1, got {self.n_vars!r}")
        if not isinstance(self.max_len, int) or self.max_len < 3:
            raise ValueError(f"max_len: expected an int >= 3, got {self.max_len!r}")

    # Token ids -------------------------------------------------------------------------------
    @property
    def pad(self) -> int:
        return 0

    @property
    def op_offset(self) -> int:
        return 1

    @property
    def var_offset(self) -> int:
        return 1 + len(self.operators)

    @property
    def const_token(self) -> int:
        return self.var_offset + self.n_vars

    @property
    def vocab_size(self) -> int:
        return self.const_token + 1

    @property
    def mask_token(self) -> int:
        return self.vocab_size

    @property
    def sep_token(self) -> int:
        return self.vocab_size + 1

    @property
    def names(self) -> tuple[str, ...]:
        return ("<pad>",) + self.operators + tuple(f"x{i}" for i in range(self.n_vars)) + ("c",)

    def arities(self) -> np.ndarray:
        """Arity of every token id (padding 0, terminals 0)."""
        a = np.zeros(self.vocab_size, np.int32)
        for i, name in enumerate(self.operators):
            a[self.op_offset + i] = OPERATORS[name].arity
        return a

    def arity_table(self) -> jnp.ndarray:
        return jnp.asarray(self.arities())

    def token_classes(self) -> np.ndarray:
        """Class of every token: -1 padding, 0 terminal, 1 unary, 2 binary (what a gene may
        be replaced by without breaking the tree)."""
        cls = self.arities().copy()
        cls[self.pad] = -1
        return cls

    def terminal_ids(self) -> np.ndarray:
        ids = list(range(self.var_offset, self.var_offset + self.n_vars))
        if self.use_constants:
            ids.append(self.const_token)
        return np.asarray(ids, np.int32)

    def op_ids(self, arity: int) -> np.ndarray:
        return np.asarray(
            [
                self.op_offset + i
                for i, n in enumerate(self.operators)
                if OPERATORS[n].arity == arity
            ],
            np.int32,
        )
