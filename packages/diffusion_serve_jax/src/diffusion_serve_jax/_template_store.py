"""Template activation caches in host memory (byte-bounded LRU) with a versioned disk tier;
uploaded template images are content-addressed (`image_template_id`) and bounded in number."""

import collections
import hashlib
import os
import pathlib
import re
import threading
from collections.abc import Callable

import numpy as np

from ._editing import TemplateCache


class StaleCacheError(RuntimeError):
    """A cached template was built with different model weights."""


def image_template_id(image: np.ndarray, version: str) -> str:
    """The content address of an uploaded template: a digest of the image's float32 bytes,
    its shape and the weights version, so the same image under the same weights always maps
    to the same cache, and other weights to another one."""
    img = np.ascontiguousarray(image, np.float32)
    h = hashlib.sha256(f"{version}|{img.shape}|".encode())
    h.update(img.tobytes())
    return f"img-{h.hexdigest()[:24]}"


class TemplateStore:
    """Template caches in host memory, bounded in bytes with least-recently-used eviction,
    optionally spilled to a disk tier.

    Templates are registered with a builder; the cache is built on first use (the template's
    full pass). An entry evicted from memory is written to `spill_dir` (one `.npz` per
    template, named and stamped with the weights version) when one is given, and read back on
    its next use instead of being rebuilt; without a disk tier it is rebuilt. A cache whose
    `version` differs from the store's (other weights) is never served: a stale file on disk
    is deleted and the template rebuilt, a stale build raises `StaleCacheError`.

    Templates registered with `upload=True` (uploaded images) are also bounded in number: past
    `max_uploads` the least recently registered or used upload is forgotten (its builder, its
    cache and its disk file); templates registered in code are never forgotten.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        version: str,
        spill_dir: str | os.PathLike | None = None,
        max_uploads: int = 1024,
    ):
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: expected a positive byte budget, got {max_bytes}")
        if max_uploads < 1:
            raise ValueError(f"max_uploads: expected >= 1, got {max_uploads}")
        if not re.fullmatch(r"[A-Za-z0-9_-]*", version):
            raise ValueError(f"version: expected an [A-Za-z0-9_-] tag, got {version!r}")
        self.max_bytes, self.version, self.max_uploads = max_bytes, version, max_uploads
        self.spill_dir = None if spill_dir is None else pathlib.Path(spill_dir)
        if self.spill_dir is not None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._builders: dict[str, Callable[[], TemplateCache]] = {}
        self._lru: collections.OrderedDict[str, TemplateCache] = collections.OrderedDict()
        self._uploads: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._building: dict[str, threading.Lock] = {}  # per-template build locks
        self.hits = self.misses = self.evictions = 0
        self.spills = self.disk_hits = self.stale_dropped = 0
        self.uploads_forgotten = 0

    def register(
        self, template_id: str, builder: Callable[[], TemplateCache], *, upload: bool = False
    ) -> bool:
        """Register (or re-register) `template_id`; True when it was not known before. An
        upload that is already known keeps its cache (the point of content addressing)."""
        with self._lock:
            new = template_id not in self._builders
            if upload:
                if not new and template_id not in self._uploads:
                    raise ValueError(
                        f"template: {template_id!r} is registered in code, not uploaded"
                    )
                if new:
                    self._builders[template_id] = builder
                self._uploads[template_id] = None
                self._uploads.move_to_end(template_id)
                while len(self._uploads) > self.max_uploads:
                    self.forget(next(iter(self._uploads)))
                    self.uploads_forgotten += 1
            else:
                self._builders[template_id] = builder
            return new

    def forget(self, template_id: str) -> None:
        """Drop `template_id`: its builder, its cache in memory and its file on disk."""
        with self._lock:
            self._builders.pop(template_id, None)
            self._uploads.pop(template_id, None)
            self._lru.pop(template_id, None)
            path = self.spill_path(template_id)
            if path is not None:
                path.unlink(missing_ok=True)

    @property
    def uploads(self) -> list[str]:
        """The uploaded templates' ids, least recently registered or used first."""
        return list(self._uploads)

    def __contains__(self, template_id: str) -> bool:
        return template_id in self._builders

    @property
    def template_ids(self) -> list[str]:
        return list(self._builders)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._lru.values())

    # -- disk tier -------------------------------------------------------------------------
    def _stem(self, template_id: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", template_id)[:40]
        return f"{safe}-{hashlib.sha1(template_id.encode()).hexdigest()[:8]}"

    def spill_path(self, template_id: str) -> pathlib.Path | None:
        """Where `template_id`'s cache for the current weights lives on disk (if spilling)."""
        if self.spill_dir is None:
            return None
        return self.spill_dir / f"{self._stem(template_id)}.v{self.version}.npz"

    def _spill(self, template_id: str, cache: TemplateCache) -> None:
        path = self.spill_path(template_id)
        if path is None or path.exists():
            return
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, k=cache.k, v=cache.v, xs=cache.xs, label=cache.label, version=cache.version)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
        self.spills += 1

    def _unspill(self, template_id: str) -> TemplateCache | None:
        if self.spill_dir is None:
            return None
        path = self.spill_path(template_id)
        for old in self.spill_dir.glob(f"{self._stem(template_id)}.*.npz"):
            if old != path:  # written for other weights: never used, removed
                old.unlink(missing_ok=True)
                self.stale_dropped += 1
        if not path.exists():
            return None
        with np.load(path) as f:
            cache = TemplateCache(f["k"], f["v"], f["xs"], int(f["label"]), str(f["version"]))
        if cache.version != self.version:  # renamed or tampered with
            path.unlink(missing_ok=True)
            self.stale_dropped += 1
            return None
        return cache

    # -- lookup ----------------------------------------------------------------------------
    def get(self, template_id: str) -> TemplateCache:
        """The cache of `template_id`: from memory, else from disk, else built. A build (the
        template's full pass, seconds) runs outside the store's lock, so registering an upload
        or serving another template never waits for it; one build per template at a time."""
        with self._lock:  # an upload may be forgotten from another thread
            cache = self._lookup(template_id)
            if cache is not None:
                return cache
            building = self._building.setdefault(template_id, threading.Lock())
        with building:
            with self._lock:  # another thread may have built it while we waited
                cache = self._lookup(template_id)
                if cache is not None:
                    return cache
                builder = self._builders[template_id]
                cache = self._unspill(template_id)
                if cache is not None:
                    self.disk_hits += 1
                else:
                    self.misses += 1
            try:
                if cache is None:
                    cache = builder()
            finally:
                with self._lock:
                    self._building.pop(template_id, None)
            with self._lock:
                return self._admit(template_id, cache)

    def _lookup(self, template_id: str) -> TemplateCache | None:
        """The in-memory cache (counted as a hit) or None; KeyError for an unknown id. Holds
        the lock."""
        if template_id not in self._builders:
            named = sorted(t for t in self._builders if t not in self._uploads)
            raise KeyError(
                f"template: unknown {template_id!r}; known {named} and {len(self._uploads)} uploads"
            )
        if template_id in self._uploads:
            self._uploads.move_to_end(template_id)
        if template_id not in self._lru:
            return None
        self.hits += 1
        self._lru.move_to_end(template_id)
        return self._lru[template_id]

    def _admit(self, template_id: str, cache: TemplateCache) -> TemplateCache:
        """Check a loaded or built cache and keep it in memory (evicting); holds the lock. A
        template forgotten during its build is served once but not kept."""
        if cache.version != self.version:
            raise StaleCacheError(
                f"template {template_id!r}: cache built for weights "
                f"{cache.version}, model is {self.version}"
            )
        if cache.nbytes > self.max_bytes:
            raise ValueError(
                f"max_bytes: one template needs {cache.nbytes} bytes, "
                f"more than the budget {self.max_bytes}"
            )
        if template_id not in self._builders:
            return cache
        self._lru[template_id] = cache
        while self.nbytes > self.max_bytes:
            evicted_id, evicted = self._lru.popitem(last=False)
            self.evictions += 1
            self._spill(evicted_id, evicted)
        return cache
