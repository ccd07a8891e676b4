"""A trial as both sides see it, with no I/O on the store and nothing of the driver.

- ``messages``: the job, the events an executor returns, how a trial ended (outcomes as types);
- ``record``: what tuner keeps on a trial's end (its user attributes), and whether it counts;
- ``metrics``: what epoch rows add up to (score, best row, value, gap, compute);
- ``diagnosis``: why a configuration failed (diverged, exploding or vanishing gradients, overfit);
- ``worker``: the worker's side: run a workload, its ``report`` callable, the stop it honours.

A Ray worker loads only this package; the submodules are imported one by one
(this file imports none of them), so reading a metric helper costs nothing.
"""
