"""Benchmark problems generated offline from their published formulas.

Nguyen-1..12 with the DSO benchmark table's sampling specs (U[a, b, n]: n uniform points) and
a subset of the AI Feynman equations with their variable ranges (uniform in [low, high]).
Each problem is (name, variable ranges, n_train, numpy formula, sympy formula string).
"""

import dataclasses

import numpy as np
import sympy


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    ranges: tuple[tuple[float, float], ...]
    n_train: int
    fn: object  # numpy function of the variables x0, x1, ...
    truth: str  # sympy source in x0, x1, ...

    @property
    def n_vars(self) -> int:
        return len(self.ranges)

    def sample(self, n: int, rng: np.random.Generator, noise: float = 0.0):
        lo = np.array([r[0] for r in self.ranges])
        hi = np.array([r[1] for r in self.ranges])
        x = rng.uniform(lo, hi, (n, self.n_vars))
        y = self.fn(*x.T)
        if noise:  # SRBench: y + N(0, noise * RMS(y))
            y = y + rng.normal(0, noise * np.sqrt(np.mean(y**2)), y.shape)
        return x.astype(np.float32), y.astype(np.float32)

    def sympy(self) -> sympy.Expr:
        syms = {f"x{i}": sympy.Symbol(f"x{i}", real=True) for i in range(self.n_vars)}
        return sympy.sympify(self.truth, locals=syms)


def _p(name, ranges, n, fn, truth):
    return Problem(name, tuple(ranges), n, fn, truth)


U1, U0_1, U0_2, U0_4 = [(-1, 1)], [(0, 1)], [(0, 2)], [(0, 4)]

NGUYEN = [
    _p("Nguyen-1", U1, 20, lambda x: x**3 + x**2 + x, "x0**3 + x0**2 + x0"),
    _p("Nguyen-2", U1, 20, lambda x: x**4 + x**3 + x**2 + x, "x0**4 + x0**3 + x0**2 + x0"),
    _p(
        "Nguyen-3",
        U1,
        20,
        lambda x: x**5 + x**4 + x**3 + x**2 + x,
        "x0**5 + x0**4 + x0**3 + x0**2 + x0",
    ),
    _p(
        "Nguyen-4",
        U1,
        20,
        lambda x: x**6 + x**5 + x**4 + x**3 + x**2 + x,
        "x0**6 + x0**5 + x0**4 + x0**3 + x0**2 + x0",
    ),
    _p("Nguyen-5", U1, 20, lambda x: np.sin(x**2) * np.cos(x) - 1, "sin(x0**2)*cos(x0) - 1"),
    _p("Nguyen-6", U1, 20, lambda x: np.sin(x) + np.sin(x + x**2), "sin(x0) + sin(x0 + x0**2)"),
    _p(
        "Nguyen-7",
        U0_2,
        20,
        lambda x: np.log(x + 1) + np.log(x**2 + 1),
        "log(x0 + 1) + log(x0**2 + 1)",
    ),
    _p("Nguyen-8", U0_4, 20, lambda x: np.sqrt(x), "sqrt(x0)"),
    _p("Nguyen-9", U0_1 * 2, 20, lambda x, y: np.sin(x) + np.sin(y**2), "sin(x0) + sin(x1**2)"),
    _p("Nguyen-10", U0_1 * 2, 20, lambda x, y: 2 * np.sin(x) * np.cos(y), "2*sin(x0)*cos(x1)"),
    _p("Nguyen-11", U0_1 * 2, 20, lambda x, y: x**y, "x0**x1"),
    _p(
        "Nguyen-12",
        U0_1 * 2,
        20,
        lambda x, y: x**4 - x**3 + y**2 / 2 - y,
        "x0**4 - x0**3 + x1**2/2 - x1",
    ),
]

R15, R13 = (1, 5), (1, 3)
FEYNMAN = [
    _p(
        "I.6.20a",
        [R13],
        100,
        lambda t: np.exp(-(t**2) / 2) / np.sqrt(2 * np.pi),
        "exp(-x0**2/2)/sqrt(2*pi)",
    ),
    _p("I.12.1", [R15, R15], 100, lambda mu, n: mu * n, "x0*x1"),
    _p("I.14.4", [R15, R15], 100, lambda k, x: k * x**2 / 2, "x0*x1**2/2"),
    _p("I.25.13", [R15, R15], 100, lambda q, c: q / c, "x0/x1"),
    _p("I.29.4", [(1, 10), (1, 10)], 100, lambda w, c: w / c, "x0/x1"),
    _p("I.34.27", [R15, R15], 100, lambda h, w: h / (2 * np.pi) * w, "x0*x1/(2*pi)"),
    _p("I.39.1", [R15, R15], 100, lambda p, v: 1.5 * p * v, "3*x0*x1/2"),
    _p("II.3.24", [R15, R15], 100, lambda p, r: p / (4 * np.pi * r**2), "x0/(4*pi*x1**2)"),
    _p("II.8.31", [R15, R15], 100, lambda e, f: e * f**2 / 2, "x0*x1**2/2"),
    _p("II.27.18", [R15, R15], 100, lambda e, f: e * f**2, "x0*x1**2"),
    _p("II.38.14", [R15, R15], 100, lambda y, s: y / (2 * (1 + s)), "x0/(2*(1 + x1))"),
    _p("III.12.43", [R15, R15], 100, lambda n, h: n * h / (2 * np.pi), "x0*x1/(2*pi)"),
    _p("I.12.5", [R15, R15], 100, lambda q, e: q * e, "x0*x1"),
    _p("I.27.6", [R15, R15, R15], 100, lambda d1, d2, n: 1 / (1 / d1 + n / d2), "1/(1/x0 + x2/x1)"),
    _p("I.39.11", [(2, 5), R15, R15], 100, lambda g, p, v: p * v / (g - 1), "x1*x2/(x0 - 1)"),
    _p("I.43.31", [R15, R15, R15], 100, lambda m, k, t: m * k * t, "x0*x1*x2"),
    _p("I.47.23", [R15, R15, R15], 100, lambda g, p, r: np.sqrt(g * p / r), "sqrt(x0*x1/x2)"),
    _p("II.4.23", [R15, R15, R15], 100, lambda q, e, r: q / (4 * np.pi * e * r), "x0/(4*pi*x1*x2)"),
    _p("II.15.4", [R15, R15, R15], 100, lambda m, b, t: -m * b * np.cos(t), "-x0*x1*cos(x2)"),
    _p("II.15.5", [R15, R15, R15], 100, lambda p, e, t: -p * e * np.cos(t), "-x0*x1*cos(x2)"),
    _p(
        "II.34.29a",
        [R15, R15, R15],
        100,
        lambda q, h, m: q * h / (4 * np.pi * m),
        "x0*x1/(4*pi*x2)",
    ),
    _p("II.37.1", [R15, R15, R15], 100, lambda m, c, b: m * (1 + c) * b, "x0*(1 + x1)*x2"),
    _p("III.7.38", [R15, R15, R15], 100, lambda m, b, h: 4 * np.pi * m * b / h, "4*pi*x0*x1/x2"),
    _p(
        "III.17.37",
        [R15, R15, R15],
        100,
        lambda b, a, t: b * (1 + a * np.cos(t)),
        "x0*(1 + x1*cos(x2))",
    ),
    _p(
        "I.12.4",
        [R15, R15, R15],
        100,
        lambda q, e, r: q / (4 * np.pi * e * r**2),
        "x0/(4*pi*x1*x2**2)",
    ),
    _p("I.14.3", [R15, R15, R15], 100, lambda m, g, z: m * g * z, "x0*x1*x2"),
    _p("I.34.8", [R15] * 4, 100, lambda q, v, b, p: q * v * b / p, "x0*x1*x2/x3"),
    _p(
        "I.6.20",
        [R13, R13],
        100,
        lambda s, t: np.exp(-((t / s) ** 2) / 2) / (np.sqrt(2 * np.pi) * s),
        "exp(-(x1/x0)**2/2)/(sqrt(2*pi)*x0)",
    ),
    _p(
        "I.10.7",
        [R15, R13, (3, 10)],
        100,
        lambda m, v, c: m / np.sqrt(1 - v**2 / c**2),
        "x0/sqrt(1 - x1**2/x2**2)",
    ),
    _p(
        "III.15.14",
        [R15, R15, R15],
        100,
        lambda h, e, d: (h / (2 * np.pi)) ** 2 / (2 * e * d**2),
        "(x0/(2*pi))**2/(2*x1*x2**2)",
    ),
]

ALL = {p.name: p for p in NGUYEN + FEYNMAN}
