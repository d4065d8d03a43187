"""What a training binary holds while it runs: the workdir's lock and the stop signal.

    with job.running(workdir) as stop:       # WorkdirLockedError if another job holds it
        ...
        recipe.fit(..., stop_signal=stop)     # Preempted after a SIGTERM / SIGINT
    ... except exit_codes.EXPECTED as error: sys.exit(exit_codes.status_of(error))

`parse_flags` is the binaries' absl flags parser: an unknown `--config.<key>` (a typo) ends the
program with the invalid-config status and a one-line message, where ml_collections raises an
AttributeError whose traceback buries its "did you mean".
"""

import contextlib
import sys

from keras_vicreg.training import exit_codes
from keras_vicreg.training import preemption
from keras_vicreg.training import workdir_lock


@contextlib.contextmanager
def running(workdir, *, lock=True):
    """Holds `workdir`'s lock (unless `lock=False`, for processes other than 0) and records stop
    signals; yields the `preemption.PreemptionSignal` to hand to `recipe.fit`."""
    with contextlib.ExitStack() as stack:
        if lock:
            stack.enter_context(workdir_lock.WorkdirLock(workdir))
        yield stack.enter_context(preemption.PreemptionSignal())


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
