"""One live job per workdir: a lock file that names its holder, and takes over a dead one's.

Two jobs started on one workdir would interleave their checkpoints and summaries and both exit 0.
`WorkdirLock` creates `<workdir>/job.lock` exclusively (`O_CREAT | O_EXCL`) and writes into it who
holds it: host, pid, the process's start time, when, and the command. A second job finds the file
and is refused with `WorkdirLockedError`, naming the holder, unless the holder is dead:

- on the same host, the pid no longer runs, or runs a process that started at another time (a
  reused pid);
- on another host, where the pid cannot be checked, the holder's heartbeat stopped: a live holder
  touches the file every `heartbeat_seconds`, and a file untouched for `stale_after_seconds` is
  taken to be a dead job's.

A stale lock is taken over with a message saying whose it was. An unreadable (empty, half-written)
lock file counts as stale. In a multi-process job only process 0 takes the lock. Remote workdirs
(`gs://`) have no exclusive create: there the lock is written when absent and read back, which
narrows a race between two starts to the moment of the write but does not close it.
"""

import json
import os
import socket
import sys
import threading
import time
import uuid

import tensorflow as tf
from tensorflow.io import gfile

LOCK_NAME = "job.lock"


class WorkdirLockedError(RuntimeError):
    """The workdir is held by another live job."""


def _process_start_time(pid):
    """The start time of process `pid` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid, start_time):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return start_time is None or _process_start_time(pid) in (None, start_time)


class WorkdirLock:
    """Holds `<workdir>/job.lock` for the life of a job; use it as a context manager.

    Args:
        workdir: the job's work directory (created if missing).
        stale_after_seconds: a lock from another host untouched this long is a dead job's.
        heartbeat_seconds: how often a holder touches its lock (local workdirs).
    """

    def __init__(self, workdir, *, stale_after_seconds=600.0, heartbeat_seconds=60.0):
        if not stale_after_seconds > heartbeat_seconds > 0:
            raise ValueError(
                "`stale_after_seconds` must exceed `heartbeat_seconds`, which must be positive. "
                f"Received: stale_after_seconds={stale_after_seconds}, "
                f"heartbeat_seconds={heartbeat_seconds}"
            )
        self.workdir = str(workdir)
        self.path = os.path.join(self.workdir, LOCK_NAME)
        self.stale_after_seconds = stale_after_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat = None

    def _record(self):
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start_time": _process_start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv),
            "token": self.token,
        }

    def _read(self):
        try:
            with gfile.GFile(self.path) as file:
                return json.loads(file.read())
        except (ValueError, OSError, tf.errors.OpError):  # missing, empty or half-written
            return None

    def _local(self):
        return "://" not in self.workdir

    def _holder_alive(self, holder):
        """Whether the job in `holder` (a lock's record, or None if unreadable) still runs."""
        if not isinstance(holder, dict) or "pid" not in holder:
            return False
        if holder.get("host") == socket.gethostname():
            return _pid_alive(int(holder["pid"]), holder.get("process_start_time"))
        if not self._local():
            return True  # no heartbeat on remote paths: only a same-host holder can be judged
        age = time.time() - os.path.getmtime(self.path)
        return age < self.stale_after_seconds

    def _describe(self, holder):
        if not isinstance(holder, dict):
            return "an unreadable lock file"
        return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                f" ({holder.get('command')!r})")

    def _write_exclusively(self, record):
        data = json.dumps(record, indent=2).encode()
        if not self._local():
            if gfile.exists(self.path):
                return False
            with gfile.GFile(self.path, "w") as file:
                file.write(data.decode())
            return True
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return True

    def acquire(self):
        """Takes the lock, or raises `WorkdirLockedError` naming the live holder."""
        gfile.makedirs(self.workdir)
        record = self._record()
        for _ in range(2):  # a stale lock is removed once, then created exclusively again
            if self._write_exclusively(record):
                break
            holder = self._read()
            if self._holder_alive(holder):
                raise WorkdirLockedError(
                    f"{self.workdir} is in use by another job: {self._describe(holder)}. Stop "
                    f"that job, or give this one another workdir; if that job is dead, delete "
                    f"{self.path}."
                )
            print(f"Taking over {self.path} from a job that is no longer running: "
                  f"{self._describe(holder)}.", file=sys.stderr, flush=True)
            gfile.remove(self.path)
        else:
            raise WorkdirLockedError(f"Another job took {self.path} while this one started.")
        if (self._read() or {}).get("token") != self.token:
            raise WorkdirLockedError(f"Another job took {self.path} while this one started.")
        if self._local():
            self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                               name="workdir-lock-heartbeat")
            self._heartbeat.start()
        return self

    def _beat(self):
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self):
        """Removes the lock if this job holds it."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if (self._read() or {}).get("token") == self.token:
            gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
        return False
