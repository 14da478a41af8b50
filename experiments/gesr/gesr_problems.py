"""Benchmark problems generated offline from their published formulas.

Nguyen-1..12 with the DSO benchmark table's sampling specs (U[a, b, n]: n uniform points),
30 AI Feynman equations with their variable ranges (uniform in [low, high]) and the 14 ODE-
Strogatz targets (7 two-dimensional systems, SRBench): the state is sampled from trajectories
integrated here with RK4 and the target is d(state)/dt from the published right-hand side.
Each problem is (name, variable ranges, n_train, numpy formula, sympy formula string).
"""

import dataclasses
import functools

import numpy as np
import sympy


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    ranges: tuple[tuple[float, float], ...]
    n_train: int
    fn: object  # numpy function of the variables x0, x1, ...
    truth: str  # sympy source in x0, x1, ...
    states: object = None  # () -> (train pool, test pool) of ODE states, or None: uniform

    @property
    def n_vars(self) -> int:
        return len(self.ranges)

    def sample(self, n: int, rng: np.random.Generator, noise: float = 0.0, test: bool = False):
        """n inputs (uniform in the ranges, or drawn without replacement from the train or
        test pool of ODE states) and the target, with SRBench noise."""
        if self.states is None:
            lo = np.array([r[0] for r in self.ranges])
            hi = np.array([r[1] for r in self.ranges])
            x = rng.uniform(lo, hi, (n, self.n_vars))
        else:
            pool = self.states()[int(test)]
            x = pool[rng.choice(len(pool), min(n, len(pool)), replace=False)]
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

# ODE-Strogatz (SRBench; La Cava et al. 2016): name -> (right-hand side of (x, y), sympy
# strings of both components, box of the initial conditions).
_SYSTEMS = {
    "bacres": (
        lambda x, y: (20 - x - x * y / (1 + 0.5 * x**2), 10 - x * y / (1 + 0.5 * x**2)),
        ("20 - x0 - x0*x1/(1 + x0**2/2)", "10 - x0*x1/(1 + x0**2/2)"),
        ((5, 10), (5, 10)),
    ),
    "barmag": (
        lambda x, y: (0.5 * np.sin(x - y) - np.sin(x), 0.5 * np.sin(y - x) - np.sin(y)),
        ("sin(x0 - x1)/2 - sin(x0)", "sin(x1 - x0)/2 - sin(x1)"),
        ((-3, 3), (-3, 3)),
    ),
    "glider": (
        lambda x, y: (-0.05 * x**2 - np.sin(y), x - np.cos(y) / x),
        ("-x0**2/20 - sin(x1)", "x0 - cos(x1)/x0"),
        ((3, 6), (-1, 1)),
    ),
    "lv": (
        lambda x, y: (3 * x - 2 * x * y - x**2, 2 * y - x * y - y**2),
        ("3*x0 - 2*x0*x1 - x0**2", "2*x1 - x0*x1 - x1**2"),
        ((0.5, 4), (0.5, 4)),
    ),
    "predprey": (
        lambda x, y: (x * (4 - x - y / (1 + x)), y * (x / (1 + x) - 0.075 * y)),
        ("x0*(4 - x0 - x1/(1 + x0))", "x1*(x0/(1 + x0) - 3*x1/40)"),
        ((0.5, 5), (0.5, 5)),
    ),
    "shearflow": (
        lambda x, y: (np.cos(x) / np.tan(y), (np.cos(y) ** 2 + 0.1 * np.sin(y) ** 2) * np.sin(x)),
        ("cos(x0)/tan(x1)", "(cos(x1)**2 + sin(x1)**2/10)*sin(x0)"),
        ((-3, 3), (0.5, 2.6)),
    ),
    "vdp": (
        lambda x, y: (10 * (y - (x**3 - x) / 3), -x / 10),
        ("10*(x1 - (x0**3 - x0)/3)", "-x0/10"),
        ((-3, 3), (-3, 3)),
    ),
}


@functools.cache
def _trajectories(system: str):
    """States of 4 trajectories (initial conditions uniform in the system's box, seed 0),
    t = 0..10 every 0.1 by RK4 with 10 substeps: 404 states, every 4th one held out as the
    test pool."""
    rhs, _, box = _SYSTEMS[system]

    def f(s):
        return np.stack(rhs(s[0], s[1]))

    rng = np.random.default_rng(0)
    lo, hi = np.array(box, np.float64).T
    out = []
    for s in rng.uniform(lo, hi, (4, 2)):
        out.append(s)
        for _ in range(100):
            for _ in range(10):
                h = 0.01
                k1 = f(s)
                k2 = f(s + h / 2 * k1)
                k3 = f(s + h / 2 * k2)
                k4 = f(s + h * k3)
                s = s + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(s)
    states = np.asarray(out)
    test = np.arange(len(states)) % 4 == 0
    return states[~test], states[test]


def _strogatz():
    out = []
    for system, (rhs, truths, _) in _SYSTEMS.items():
        train = _trajectories(system)[0]
        ranges = tuple(
            (float(lo), float(hi)) for lo, hi in zip(train.min(0), train.max(0), strict=True)
        )
        for j in range(2):
            out.append(
                Problem(
                    f"{system}{j + 1}",
                    ranges,
                    100,
                    lambda x, y, rhs=rhs, j=j: rhs(x, y)[j],
                    truths[j],
                    functools.partial(_trajectories, system),
                )
            )
    return out


STROGATZ = _strogatz()
ALL = {p.name: p for p in NGUYEN + FEYNMAN + STROGATZ}
