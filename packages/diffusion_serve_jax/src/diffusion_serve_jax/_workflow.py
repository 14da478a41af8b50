"""Workflows as DAGs of model nodes, validated when they are registered.

A `ModelSpec` declares a model's named, typed inputs and outputs (per-sample shapes; the batch
axis is implicit) and its batched pure function. A `Workflow` wires model nodes together:
each node input names a source, either `"input.<name>"` (a request input) or
`"<node>.<output>"`. `Catalog.register_workflow` checks the wiring and returns the workflow
in topological order, raising `WorkflowError` naming what is wrong: unknown models, unknown
sources, missing or extra inputs, shape/dtype mismatches, cycles.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class WorkflowError(ValueError):
    """A workflow or model registration that cannot be served."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"

    def describe(self) -> str:
        return f"{self.dtype}{list(self.shape)}"

    def check(self, name: str, value: object) -> np.ndarray:
        """Validate one per-sample value (host side) and return it as a numpy array."""
        try:
            arr = np.asarray(value, dtype=self.dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{name}: expected {self.describe()}, got {type(value).__name__}"
            ) from e
        if arr.shape != self.shape:
            raise ValueError(f"{name}: expected shape {list(self.shape)}, got {list(arr.shape)}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: contains NaN or inf")
        return arr


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A servable model: `fn(params, inputs: dict) -> dict`, inputs/outputs batched on axis 0."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    fn: Callable | None  # None: a spec only planned or simulated, never run
    params: Any = None

    @property
    def param_bytes(self) -> int:
        import jax

        return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self.params)))


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    model: str
    inputs: Mapping[str, str]  # model input name -> "input.x" or "<node>.<output>"


@dataclasses.dataclass(frozen=True)
class Workflow:
    name: str
    inputs: Mapping[str, TensorSpec]
    nodes: tuple[Node, ...]
    outputs: Mapping[str, str]  # workflow output name -> "<node>.<output>"


class WorkflowBuilder:
    """Fluent builder: `WorkflowBuilder("t2i").input("label", TensorSpec((), "int32"))
    .node("enc", "encoder", label="input.label").output("image", "gen.image").build()`."""

    def __init__(self, name: str):
        self._name, self._inputs, self._nodes, self._outputs = name, {}, [], {}

    def input(self, name: str, spec: TensorSpec) -> "WorkflowBuilder":
        self._inputs[name] = spec
        return self

    def node(self, name: str, model: str, **inputs: str) -> "WorkflowBuilder":
        self._nodes.append(Node(name, model, dict(inputs)))
        return self

    def output(self, name: str, source: str) -> "WorkflowBuilder":
        self._outputs[name] = source
        return self

    def build(self) -> Workflow:
        return Workflow(self._name, dict(self._inputs), tuple(self._nodes), dict(self._outputs))


@dataclasses.dataclass(frozen=True)
class CompiledWorkflow:
    """A validated workflow: nodes in topological order and each node's upstream nodes."""

    workflow: Workflow
    order: tuple[str, ...]
    deps: Mapping[str, frozenset[str]]
    children: Mapping[str, tuple[str, ...]]

    @property
    def name(self) -> str:
        return self.workflow.name

    def node(self, name: str) -> Node:
        return next(n for n in self.workflow.nodes if n.name == name)


def _split_source(source: str, where: str) -> tuple[str, str]:
    if not isinstance(source, str) or source.count(".") != 1:
        raise WorkflowError(
            f"{where}: source must look like 'node.output' or 'input.x', got {source!r}"
        )
    a, b = source.split(".")
    return a, b


class Catalog:
    """The registry of models and workflows that a runtime serves."""

    def __init__(self):
        self.models: dict[str, ModelSpec] = {}
        self.workflows: dict[str, CompiledWorkflow] = {}

    def register_model(self, spec: ModelSpec) -> None:
        if spec.name in self.models:
            raise WorkflowError(f"model {spec.name!r}: already registered")
        if not spec.outputs:
            raise WorkflowError(f"model {spec.name!r}: must declare at least one output")
        self.models[spec.name] = spec

    def register_workflow(self, wf: Workflow) -> CompiledWorkflow:
        compiled = self.validate(wf)
        self.workflows[wf.name] = compiled
        return compiled

    def with_variants(self, variants: int) -> "Catalog":
        """A catalog of the same models with `variants` copies `<name>#<v>` of each workflow
        (same nodes): variant traffic that shares every model, as LoRA'd scenes do."""
        if not isinstance(variants, int) or variants < 1:
            raise ValueError(f"variants: expected a positive int, got {variants!r}")
        out = Catalog()
        for spec in self.models.values():
            out.register_model(spec)
        for name, cw in sorted(self.workflows.items()):
            for v in range(variants):
                out.register_workflow(dataclasses.replace(cw.workflow, name=f"{name}#{v}"))
        return out

    def validate(self, wf: Workflow) -> CompiledWorkflow:
        w = f"workflow {wf.name!r}"
        if wf.name in self.workflows:
            raise WorkflowError(f"{w}: already registered")
        if not wf.nodes:
            raise WorkflowError(f"{w}: has no nodes")
        names = [n.name for n in wf.nodes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise WorkflowError(f"{w}: duplicate node names {dup}")
        if "input" in names:
            raise WorkflowError(f"{w}: 'input' is reserved for request inputs")
        by_name = {n.name: n for n in wf.nodes}
        deps: dict[str, set[str]] = {}
        for node in wf.nodes:
            where = f"{w}, node {node.name!r}"
            if node.model not in self.models:
                raise WorkflowError(
                    f"{where}: unknown model {node.model!r}; known: {sorted(self.models)}"
                )
            spec = self.models[node.model]
            missing = sorted(set(spec.inputs) - set(node.inputs))
            extra = sorted(set(node.inputs) - set(spec.inputs))
            if missing or extra:
                raise WorkflowError(
                    f"{where}: model {node.model!r} takes inputs {sorted(spec.inputs)}; "
                    f"missing {missing}, unexpected {extra}"
                )
            deps[node.name] = set()
            for arg, source in node.inputs.items():
                got = self._source_spec(wf, by_name, source, f"{where}, input {arg!r}")
                want = spec.inputs[arg]
                if got != want:
                    raise WorkflowError(
                        f"{where}, input {arg!r}: expects {want.describe()}, "
                        f"but {source!r} is {got.describe()}"
                    )
                src = source.split(".")[0]
                if src != "input":
                    deps[node.name].add(src)
        if not wf.outputs:
            raise WorkflowError(f"{w}: declares no outputs")
        for out, source in wf.outputs.items():
            if source.split(".")[0] == "input":
                raise WorkflowError(f"{w}, output {out!r}: must come from a node, got {source!r}")
            self._source_spec(wf, by_name, source, f"{w}, output {out!r}")
        order = _toposort(deps, w)
        children = {n: tuple(m for m in order if n in deps[m]) for n in order}
        return CompiledWorkflow(
            wf, tuple(order), {k: frozenset(v) for k, v in deps.items()}, children
        )

    def _source_spec(self, wf: Workflow, by_name, source: str, where: str) -> TensorSpec:
        a, b = _split_source(source, where)
        if a == "input":
            if b not in wf.inputs:
                raise WorkflowError(
                    f"{where}: unknown request input {b!r}; known {sorted(wf.inputs)}"
                )
            return wf.inputs[b]
        if a not in by_name:
            raise WorkflowError(f"{where}: unknown node {a!r} in source {source!r}")
        outs = self.models[by_name[a].model].outputs
        if b not in outs:
            raise WorkflowError(
                f"{where}: node {a!r} (model {by_name[a].model!r}) has no output {b!r}; "
                f"it has {sorted(outs)}"
            )
        return outs[b]


def _toposort(deps: dict[str, set[str]], where: str) -> list[str]:
    """Kahn's algorithm; a leftover set of nodes is a cycle and is named in the error."""
    remaining = {k: set(v) for k, v in deps.items()}
    order: list[str] = []
    ready = sorted(k for k, v in remaining.items() if not v)
    while ready:
        n = ready.pop(0)
        order.append(n)
        del remaining[n]
        for k, v in remaining.items():
            if n in v:
                v.discard(n)
                if not v:
                    ready.append(k)
        ready.sort()
    if remaining:
        raise WorkflowError(f"{where}: cycle among nodes {sorted(remaining)}")
    return order
