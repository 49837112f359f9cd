"""Built models kept for the next build of the same spec: a small pool per framework.

Building a spec is expensive in some frameworks (a Keras model and the trace of its
``tf.function``, a torch module whose layers draw a random initialisation first), and
:func:`xgrad.compare` and ``xgrad sweep`` build the same spec again and again with other
weights. A framework's builder keeps what it built in a :class:`BuildPool` and, for the next
build with the same key (spec, dtype), takes it back and assigns the new weights instead of
building again.

The rules that keep this invisible:

* **A kit has one owner at a time.** A model takes a kit out of the pool (:meth:`take`) and
  owns it while it lives; the kit goes back only when the model is garbage-collected
  (:meth:`lend` registers that), so two live models never share a framework object.
* **Nothing handed to the user goes back.** A model marks its lease :meth:`Lease.escape`
  when it gives away a framework object it owns (``model.native``, a Keras layer or
  variable): that kit is never reused, whatever the user does with it later.
* **Every weight is assigned on reuse**, so a reused kit holds exactly the weights asked for.
* **Bounded**: at most :attr:`BuildPool.max_idle` idle kits holding at most
  :attr:`BuildPool.max_bytes` of weights in all, the least recently returned dropped first;
  :meth:`BuildPool.clear` drops them all. No framework setting is touched.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["BuildPool", "Lease"]


class Lease:
    """A model's hold on a pooled kit; :meth:`escape` keeps the kit from ever going back."""

    __slots__ = ("escaped",)

    def __init__(self) -> None:
        self.escaped = False

    def escape(self) -> None:
        """The owner handed a framework object of the kit to someone: never reuse it."""
        self.escaped = True


class BuildPool:
    """Idle kits by key; the least recently returned go first when a bound is passed.

    Args:
        max_idle: how many idle kits the pool holds at most, over all keys.
        max_bytes: how many bytes of weights the idle kits hold at most, over all keys.
    """

    def __init__(self, max_idle: int = 64, max_bytes: int = 256 << 20) -> None:
        self.max_idle = max_idle
        self.max_bytes = max_bytes
        self._idle: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._serial = 0
        self.hits = 0
        self.misses = 0

    def take(self, key: Hashable):
        """An idle kit for ``key`` (now the caller's), or ``None``."""
        with self._lock:
            for slot in reversed(self._idle):
                if slot[0] == key:
                    self.hits += 1
                    kit, nbytes = self._idle.pop(slot)
                    self._bytes -= nbytes
                    return kit
            self.misses += 1
            return None

    def lend(self, owner: object, key: Hashable, kit: object, nbytes: int = 0) -> Lease:
        """Register ``kit`` (holding ``nbytes`` of weights) as ``owner``'s: it returns to the
        pool when ``owner`` is collected, unless the returned :class:`Lease` was escaped by
        then."""
        lease = Lease()
        finalizer = weakref.finalize(owner, self._give_back, key, kit, nbytes, lease)
        finalizer.atexit = False  # nothing to keep at exit
        return lease

    def _give_back(self, key: Hashable, kit: object, nbytes: int, lease: Lease) -> None:
        if lease.escaped or self.max_idle <= 0 or nbytes > self.max_bytes:
            return
        with self._lock:
            self._serial += 1
            self._idle[(key, self._serial)] = (kit, nbytes)
            self._bytes += nbytes
            while len(self._idle) > self.max_idle or self._bytes > self.max_bytes:
                _, (_, dropped) = self._idle.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Drop every idle kit."""
        with self._lock:
            self._idle.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._idle)
