"""A dead peer ends the job: a process that makes no progress for too long exits non-zero.

In a job of several processes every training step is a collective: when one process dies (its host
lost, killed, out of memory) the others wait for it inside the collective, and some engines (gloo
and XLA's CPU collectives, NCCL) can wait for a very long time or for ever. A job that hangs holds
its machines and never reaches the supervisor's restart. `StallWatchdog` is the bound that works
whatever the engine: a thread that ends the process with the PEER_LOST status when no training
step has finished for `timeout_s` seconds. The relaunched job resumes from the newest checkpoint.

Exiting is `os._exit`: the main thread is blocked inside a collective in C++ code, where no Python
exception can reach it. The message goes to stderr first.

The engines' own time-outs (torch.distributed's `timeout`, the coordination services' heartbeats)
still apply and usually end the process sooner, with their own error; this is the floor under them.
"""

import contextlib
import os
import sys
import threading
import time

import keras


class StallWatchdog(keras.callbacks.Callback):
    """Ends the process with `status` when no training step has finished for `timeout_s`.

    Use it as a context manager around the job and as a `fit` callback: it is armed when training
    begins, each finished step counts as progress, and the first step (which compiles) gets twice
    the time. Other waits to bound (the others waiting while process 0 writes the export) go
    inside `allow(seconds)`; outside training and `allow` it is disarmed, so that the data's
    preparation (scanning a dataset's images, decoding it into memory) can take as long as it
    takes.

    Args:
        timeout_s: seconds without a finished step (or a `beat`) after which the process exits.
        status: the exit status (`exit_codes.PEER_LOST`).
        describe: a short text naming this process, for the message (e.g. "process 1 of 2").
        clock: a monotonic clock (tests pass a fake).
        exit_fn: what ends the process (tests pass a recorder); `os._exit` by default.
    """

    def __init__(self, timeout_s, status, describe="", clock=time.monotonic, exit_fn=None):
        super().__init__()
        if not timeout_s > 0:
            raise ValueError(f"`timeout_s` must be > 0. Received: timeout_s={timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.status = status
        self.describe = describe
        self._clock = clock
        self._exit = exit_fn or os._exit
        self._deadline = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = None

    def beat(self, allowance_s=None):
        """Counts as progress: the next deadline is `allowance_s` (default `timeout_s`) away."""
        with self._lock:
            allowance = self.timeout_s if allowance_s is None else allowance_s
            self._deadline = self._clock() + allowance

    def disarm(self):
        """No deadline until the next `beat`."""
        with self._lock:
            self._deadline = None

    @contextlib.contextmanager
    def allow(self, seconds):
        """A wait of up to `seconds` (plus `timeout_s`) that is not a training step."""
        self.beat(seconds + self.timeout_s)
        try:
            yield
        finally:
            self.disarm()

    def on_train_begin(self, logs=None):
        self.beat(2 * self.timeout_s)

    def on_train_batch_end(self, batch, logs=None):
        self.beat()

    def on_train_end(self, logs=None):
        self.disarm()

    def expired(self):
        """Whether the deadline has passed (what the thread checks)."""
        with self._lock:
            return self._deadline is not None and self._clock() > self._deadline

    def _watch(self):
        while not self._stopped.wait(min(1.0, self.timeout_s / 4)):
            if self.expired():
                self._fire()
                return

    def _fire(self):
        where = f" on {self.describe}" if self.describe else ""
        print(
            f"\nNo training step finished in {self.timeout_s:.0f} s{where}: another process of "
            "the job has most likely died or hung (its host lost, killed, or out of memory), "
            "and this one is waiting for it in a collective. Exiting with status "
            f"{self.status} (PEER_LOST); relaunch the job: it resumes from the newest "
            "checkpoint. A slow step that is not a dead peer needs a longer "
            "--config.peer_timeout_s.",
            file=sys.stderr, flush=True,
        )
        sys.stdout.flush()
        self._exit(self.status)

    def __enter__(self):
        self._stopped.clear()
        self._thread = threading.Thread(target=self._watch, name="StallWatchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        return False
