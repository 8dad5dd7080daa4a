"""The producer/consumer hand-off behind training's prefetch and extraction's host batches."""

import contextlib
import itertools
import threading
import time

import pytest

from flmoe_jax.handoff import Handoff, prefetch


def _new_threads(before):
  """Threads started since `before` (a set of threads) and still running."""
  return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_prefetch_yields_every_item_in_order():
  before = set(threading.enumerate())
  assert list(prefetch(iter(range(10)), size=2)) == list(range(10))
  assert list(prefetch(iter([]), size=3)) == []
  assert not _new_threads(before)


def test_producer_error_is_raised_after_the_items_before_it():
  def items():
    yield from (1, 2)
    raise ValueError("bad row 3")

  got = []
  with pytest.raises(ValueError, match="bad row 3"):
    for x in prefetch(items(), size=1):
      got.append(x)
  assert got == [1, 2]


def test_a_consumer_that_stops_early_releases_the_producer():
  # An endless producer and a consumer that leaves after 3 items (as a NaN or an error in the
  # training step does): closing the generator ends the thread, and the producer never ran more
  # than the queue's size (+ the item in hand) ahead.
  made = itertools.count()
  before = set(threading.enumerate())

  def endless():
    while True:
      yield next(made)

  with contextlib.closing(prefetch(endless(), size=2)) as it:
    assert [next(it) for _ in range(3)] == [0, 1, 2]
  assert not _new_threads(before)
  assert next(made) <= 3 + 2 + 2


def test_close_unblocks_a_producer_waiting_on_a_full_queue():
  handoff = Handoff(1)
  returned = []

  def work():
    returned.append([handoff.put(i) for i in range(3)])

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  time.sleep(0.2)  # the producer is now blocked on its second put
  assert thread.is_alive()
  handoff.close(thread)
  assert not thread.is_alive()
  # The first put went through; the last saw the stop (the second may have slipped in while draining).
  assert returned[0][0] and not returned[0][-1] and handoff.stopped
