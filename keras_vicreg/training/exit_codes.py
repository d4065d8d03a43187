"""The exit statuses of the training binaries, one name for each way a run ends.

The library raises typed exceptions; `status_of` maps each to a status, so that a scheduler or a
restart-on-failure supervisor can tell a run to retry (PREEMPTED: run the same command again, it
resumes exactly) from one to fix first (INVALID_CONFIG, DIVERGED) and from a crash.

| status | name | what happened | what to do |
|---:|---|---|---|
| 0 | DONE | trained to the end and exported (or only exported: the run had finished) | |
| 1 | CRASH | an unexpected exception (Python's own status for an uncaught one) | read the traceback |
| 2 | INVALID_CONFIG | an invalid config or flag, data that does not match it or is missing or runs out or has too many images that do not decode, a workdir held by a live job, a changed config on resume, checkpoints that do not load | fix what the message names |
| 3 | DIVERGED | a non-finite loss or weight; the newest finite checkpoint is kept | lower the learning rate, then rerun |
| 4 | PEER_LOST | several processes: another process of the job died or hung, and no step finished for `config.peer_timeout_s` | relaunch the whole job: it resumes from the newest checkpoint |
| 75 | PREEMPTED | SIGTERM or SIGINT; the step reached is checkpointed | rerun the same command (sysexits' EX_TEMPFAIL) |
"""

from keras_vicreg.training import bad_images
from keras_vicreg.training import callbacks
from keras_vicreg.training import checkpointing
from keras_vicreg.training import multihost
from keras_vicreg.training import preemption
from keras_vicreg.training import workdir_lock

DONE = 0
CRASH = 1
INVALID_CONFIG = 2
DIVERGED = 3
PEER_LOST = 4
PREEMPTED = 75

# Checked in order: the first class an exception is an instance of gives its status.
_STATUSES = (
    (preemption.Preempted, PREEMPTED),
    (callbacks.NonFiniteTrainingError, DIVERGED),
    (workdir_lock.WorkdirLockedError, INVALID_CONFIG),
    (checkpointing.ShortEpochError, INVALID_CONFIG),
    (bad_images.UndecodableImagesError, INVALID_CONFIG),
    (checkpointing.NoLoadableCheckpointError, INVALID_CONFIG),
    (checkpointing.OptimizerStateSkippedError, INVALID_CONFIG),
    (ValueError, INVALID_CONFIG),
    (multihost.WriterFailedError, CRASH),  # process 0's own status says what happened
)
# What a binary catches and turns into a status with a message (anything else is a crash).
EXPECTED = tuple(error_class for error_class, _ in _STATUSES)


def status_of(error):
    """The exit status for an exception of `EXPECTED`; CRASH for any other."""
    for error_class, status in _STATUSES:
        if isinstance(error, error_class):
            return status
    return CRASH
