"""How many intra-op threads torch uses for a fit or a prediction.

torch splits one operation (a matrix product, an element-wise op) over its intra-op
threads, by default one per core. For the small products of a typical fit (a batch of
64 rows through a layer of 100 units) the split saves nothing on an idle machine and
costs a great deal on a busy one: every op waits for the slowest thread, and a thread
whose core another process holds waits for the scheduler. :func:`threads_for` gives
one thread to work too small to share, and more to large batches of wide layers;
:func:`torch_threads` applies a count for the length of one call and restores torch's
setting after.

The crossover was measured with ``python benchmarks/bench_threads.py --crossover``: an
Adam step (forward, backward, update) of a ``width -> width -> 10`` ReLU network on a
batch of ``rows`` rows, 1 against 2 threads on a 2-core virtual machine, alone and
with a process spinning on the other core (best of 3; the machine shared with other
work; two runs, the second at commit 8e20a99 with the spinner pinned)::

    multiply-adds per batch     alone: 2 / 1 threads   busy: 2 / 1 threads
    1.3e5 (64 rows, width 40)   1.10, 1.13             4.1, 7.7
    7.0e5 (64, 100)             1.57, 1.37             24, 3.2
    2.8e6 (256, 100)            1.10, 6.0              18, 3.5
    1.7e7 (64, 512)             0.70, 1.03             1.2, 2.2
    7.0e7 (1024, 256)           0.71, 0.56             1.8, 1.6
    1.4e8 (512, 512)            0.76, 0.50             1.1, 1.5
    2.8e8 (4096, 256)           1.94, 0.68             1.0, 1.2
    1.1e9 (1024, 1024)          0.49, 0.50             1.2, 1.8

Up to 1.7e7 multiply-adds per batch a second thread did not help reliably and made a
busy machine's step up to 24 times slower; from 7e7 on two threads were 1.4-2x faster
alone and 1.0-1.8x slower busy. Hence a second thread from 4e7 on
(:data:`WORK_PER_THREAD`).
"""

import contextlib

import torch

#: Multiply-adds per training step (batch rows x multiply-adds of one row's forward
#: pass) that each thread must have before a second one is worth starting.
WORK_PER_THREAD = 20_000_000

#: A forward pass alone (prediction) is about a third of a training step's work.
_FORWARD_SHARE = 1 / 3


def dense_macs(widths):
    """Multiply-adds of one row through dense layers of these widths (input first)."""
    widths = [int(w) for w in widths]
    return sum(a * b for a, b in zip(widths, widths[1:], strict=False))


def threads_for(rows, macs_per_row, max_threads, *, training=True):
    """The intra-op thread count for ``rows`` rows per step.

    Parameters
    ----------
    rows : int
        Rows of one step: the batch size of a training step, the number of rows
        predicted at once.
    macs_per_row : float
        Multiply-adds of one row's forward pass (:func:`dense_macs` for an MLP).
    max_threads : int
        The most threads to use (torch's current setting).
    training : bool, default=True
        Whether a step is forward, backward and update (else a forward pass only).

    Returns
    -------
    n : int
        Between 1 and ``max_threads``: one thread per :data:`WORK_PER_THREAD`.
    """
    work = float(rows) * float(macs_per_row) * (1.0 if training else _FORWARD_SHARE)
    return int(max(1, min(int(max_threads), work // WORK_PER_THREAD)))


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch intra-op threads; torch's setting is restored
    after (also when the block raises). ``None`` changes nothing.

    torch keeps the count per calling thread (OpenMP), so concurrent fits in threads
    each set their own.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    if n == previous:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
