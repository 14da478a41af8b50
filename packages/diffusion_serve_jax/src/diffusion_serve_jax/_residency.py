"""Device memory: which models (micro-serving) or workflow replicas (monolithic) each device
holds under a byte budget, with least-recently-used eviction and load accounting. Shared by
the simulator and the runtime so that both follow one policy."""

from collections import OrderedDict
from collections.abc import Mapping, Sequence


def initial_placement(
    mode: str, workflows: Sequence[str], models_of: Mapping[str, Sequence[str]], devices: int
) -> list[list[str]]:
    """Keys each device tries to hold at start, in order: device d starts with workflow
    d's models (micro) or replica (monolithic), then the other keys in turn."""
    if mode == "micro":
        keys = sorted({m for w in workflows for m in models_of[w]})
    else:
        keys = list(workflows)
    out = []
    for d in range(devices):
        w = workflows[d % len(workflows)]
        first = list(models_of[w]) if mode == "micro" else [w]
        out.append(first + [keys[(d + i) % len(keys)] for i in range(len(keys))])
    return out


class DeviceMemory:
    """Per-device resident keys (LRU order) under a byte budget; `None` budget: all resident."""

    def __init__(self, budget, size, load, placement):
        self.budget, self.size, self.load = budget, size, load
        self.resident = [OrderedDict() for _ in placement]
        self.holders = {k: set() for k in size}
        self.loads, self.load_s = 0, 0.0
        if budget is None:
            return
        too_big = sorted(k for k in size if size[k] > budget)
        if too_big:
            raise ValueError(
                f"memory_bytes: {budget:.0f} cannot hold {too_big} "
                f"({[int(size[k]) for k in too_big]} bytes)"
            )
        for d, (res, keys) in enumerate(zip(self.resident, placement, strict=True)):
            used = 0.0
            for k in keys:
                if k not in res and used + size[k] <= budget:
                    res[k] = None
                    self.holders[k].add(d)
                    used += size[k]

    def holds(self, device, key) -> bool:
        return self.budget is None or key in self.resident[device]

    def bring(self, device, key) -> float:
        """Make `key` resident on `device` (evicting LRU); returns the load seconds paid."""
        if self.budget is None:
            return 0.0
        res = self.resident[device]
        if key in res:
            res.move_to_end(key)
            return 0.0
        while sum(self.size[k] for k in res) + self.size[key] > self.budget:
            self.holders[res.popitem(last=False)[0]].discard(device)
        res[key] = None
        self.holders[key].add(device)
        self.loads += 1
        self.load_s += self.load[key]
        return self.load[key]
