"""A bounded hand-off from one producer thread to one consumer: errors re-raised, stoppable.

Training places the next batches on the device while the current step runs (`prefetch`), and
feature extraction tokenises and decodes the next host batches while the encoder runs
(`features.host_batches.Producer`). Both need the same four things: a bounded queue (memory stays
at `size` items), the producer's error raised in the consumer, an end marker, and a way for a
consumer that stops early (an error in the step, a NaN, Ctrl-C) to release the producer, which
would otherwise block on a full queue for the rest of the process, holding its items.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_DONE = object()


@dataclasses.dataclass(frozen=True)
class _Failure:
  error: BaseException


class Handoff:
  """A bounded queue between one producer thread and one consumer.

  The producer calls `put` for each item, then `finish` (or `fail` with its error); `put` returns
  False once the consumer has called `close`, and the producer should then return. The consumer
  iterates (the producer's error is raised there) and calls `close(thread)` when it stops, early or
  not: the stop flag is set and the queue drained until the producer thread has ended.
  """

  def __init__(self, size: int):
    self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
    self._stop = threading.Event()

  @property
  def stopped(self) -> bool:
    return self._stop.is_set()

  def put(self, item: Any) -> bool:
    """Hands one item over (blocks while the queue is full); False once the consumer closed."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def finish(self) -> None:
    """Marks the end of the items."""
    self.put(_DONE)

  def fail(self, error: BaseException) -> None:
    """Hands the producer's error to the consumer (raised there at this point of the sequence)."""
    self.put(_Failure(error))

  def __iter__(self) -> Iterator[Any]:
    while True:
      item = self._queue.get()
      if item is _DONE:
        return
      if isinstance(item, _Failure):
        raise item.error
      yield item

  def close(self, thread: threading.Thread) -> None:
    """Stops the producer and waits for its thread to end (drains so a blocked `put` sees it)."""
    self._stop.set()
    while thread.is_alive():
      try:
        self._queue.get(timeout=0.05)
      except queue.Empty:
        pass


def prefetch(iterator: Iterable[Any], size: int = 2) -> Iterator[Any]:
  """Runs `iterator` in a background thread, `size` items ahead; re-raises its errors here.

  A generator: closing it (or leaving a `for` loop over it by an error and letting it be collected)
  stops the thread after the item it is computing; wrap it in `contextlib.closing` where the loop
  may end early, so that happens at once.
  """
  handoff = Handoff(size)

  def work():
    try:
      for item in iterator:
        if not handoff.put(item):
          return
      handoff.finish()
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
      handoff.fail(e)

  thread = threading.Thread(target=work, name="flmoe-prefetch", daemon=True)
  thread.start()
  try:
    yield from handoff
  finally:
    handoff.close(thread)
