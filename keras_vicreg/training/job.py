"""What a training binary holds while it runs: the workdir's lock, the stop signal, the watchdog.

    with job.running(workdir, peer_timeout_s) as running_job:   # WorkdirLockedError if locked
        ...
        recipe.fit(..., stop_signal=running_job.stop_signal, watchdog=running_job.watchdog)
    ... except exit_codes.EXPECTED as error: sys.exit(exit_codes.status_of(error))

In a job of several processes (`keras_vicreg.training.multihost`), process 0 alone takes the lock
(the others stop with it when it cannot), a stop signal on any process stops all of them after
the same step (`preemption.AgreedStopSignal`), and a `watchdog.StallWatchdog` ends a process that
waits for a dead peer.

`parse_flags` is the binaries' absl flags parser: an unknown `--config.<key>` (a typo) ends the
program with the invalid-config status and a one-line message, where ml_collections raises an
AttributeError whose traceback buries its "did you mean".
"""

import contextlib
import dataclasses
import os
import sys
import time
import traceback

from keras_vicreg.training import exit_codes
from keras_vicreg.training import multihost
from keras_vicreg.training import preemption
from keras_vicreg.training import watchdog as watchdog_lib
from keras_vicreg.training import workdir_lock


@dataclasses.dataclass
class RunningJob:
    """What `running` yields.

    Attributes:
        stop_signal: what `recipe.fit` watches: a `preemption.PreemptionSignal`, or for several
            processes a `preemption.AgreedStopSignal`.
        watchdog: a `watchdog.StallWatchdog` for several processes (a `fit` callback), else None.
    """

    stop_signal: object
    watchdog: object = None


@contextlib.contextmanager
def running(workdir, peer_timeout_s=None, *, lock=True):
    """Holds `workdir`'s lock (process 0 of the job; none with `lock=False`), records stop signals
    and, in a job of several processes, watches for dead peers (`peer_timeout_s`).

    Yields:
        A `RunningJob`.
    """
    with contextlib.ExitStack() as stack:
        def lock_the_workdir():
            stack.enter_context(workdir_lock.WorkdirLock(workdir))

        if lock:
            multihost.on_writer(lock_the_workdir)
        local = stack.enter_context(preemption.PreemptionSignal())
        if multihost.process_count() == 1:
            yield RunningJob(local)
            return
        index, count = multihost.process_index(), multihost.process_count()
        watchdog = stack.enter_context(watchdog_lib.StallWatchdog(
            peer_timeout_s or 600.0, exit_codes.PEER_LOST, describe=f"process {index} of {count}"
        ))
        yield RunningJob(preemption.AgreedStopSignal(local, multihost.any_process), watchdog)


def parse_flags(argv):
    """absl's flag parsing, with config-key errors as the invalid-config status."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, TypeError) as error:
        text = str(error).strip("'\"").replace("\\n", " ").replace("\\'", "'")
        print(f"Invalid flag: {text}. Received: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(exit_codes.INVALID_CONFIG)
    except flags.Error as error:
        print(f"Invalid flag: {error}", file=sys.stderr)
        sys.exit(exit_codes.INVALID_CONFIG)


WRITER_FIRST_S = 3.0  # how long the other processes let process 0 exit first


def exit_for(error):
    """Ends the program with `error`'s status (`exit_codes.status_of`), its message printed.

    An error of `exit_codes.EXPECTED` prints its message, any other its traceback. In a job of
    several processes the process ends at once (`os._exit`): the engines' exit handlers would wait
    for peers that may be dead (JAX's waits up to its heartbeat timeout). A process stopped because
    process 0 failed first lets process 0 exit, so that launchers (torchrun) report process 0's
    status as the root cause.
    """
    if isinstance(error, exit_codes.EXPECTED):
        print(error, file=sys.stderr)
    else:
        traceback.print_exception(error)
    status = exit_codes.status_of(error)
    try:
        processes = multihost.process_count()
    except ValueError:  # the job's description itself is what failed (e.g. a malformed TF_CONFIG)
        processes = 1
    if processes == 1:
        sys.exit(status)
    if isinstance(error, multihost.WriterFailedError):
        time.sleep(WRITER_FIRST_S)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
