"""Export of one expression to sympy and LaTeX (simplified through sympy)."""

import numpy as np
import sympy

from ._primitives import OPERATORS, PrimitiveSet


def to_sympy(
    tokens: np.ndarray,
    consts: np.ndarray,
    pset: PrimitiveSet,
    *,
    simplify: bool = False,
    digits: int = 6,
    variables: tuple[str, ...] | None = None,
) -> sympy.Expr:
    """The expression as sympy, constants rounded to `digits` significant digits.

    Protected operators map to their plain mathematical form (see `PrimitiveSet`).
    """
    tokens = [int(t) for t in np.asarray(tokens)]
    consts = np.asarray(consts, np.float64)
    names = variables or tuple(f"x{i}" for i in range(pset.n_vars))
    if len(names) != pset.n_vars:
        raise ValueError(f"variables: expected {pset.n_vars} names, got {len(names)}")
    syms = [sympy.Symbol(n, real=True) for n in names]
    ar = pset.arities()

    def rec(i: int):
        t = tokens[i]
        if pset.var_offset <= t < pset.const_token:
            return syms[t - pset.var_offset], i + 1
        if t == pset.const_token:
            return sympy.Float(float(f"{consts[i]:.{digits}g}")), i + 1
        if not pset.op_offset <= t < pset.var_offset:
            raise ValueError(f"tokens: position {i} holds {t}, not an operator or terminal")
        op = OPERATORS[pset.operators[t - pset.op_offset]]
        args, j = [], i + 1
        for _ in range(ar[t]):
            a, j = rec(j)
            args.append(a)
        return op.sym(*args), j

    expr = rec(0)[0]
    return sympy.simplify(expr) if simplify else expr


def to_latex(tokens: np.ndarray, consts: np.ndarray, pset: PrimitiveSet, **kw) -> str:
    """LaTeX of the (simplified) sympy form."""
    return sympy.latex(to_sympy(tokens, consts, pset, simplify=True, **kw))


def is_symbolic_match(found: sympy.Expr, truth: sympy.Expr, *, tol: float = 1e-4) -> bool:
    """SRBench's "symbolic solution": ``found - truth`` or ``found / truth`` simplifies to a
    constant (constants compared after rounding, so near-equal floats count)."""
    for cand in (found - truth, found / truth):
        try:
            simp = sympy.simplify(sympy.nsimplify(cand, tolerance=tol, rational=True))
        except (TypeError, ValueError, ZeroDivisionError, RecursionError):
            continue
        if simp.is_number or not simp.free_symbols:
            return True
    return False
