"""keras_vicreg.training.workdir_lock: one live job per workdir, stale locks taken over."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from keras_vicreg.training import workdir_lock
from keras_vicreg.training.workdir_lock import WorkdirLock
from keras_vicreg.training.workdir_lock import WorkdirLockedError

pytestmark = pytest.mark.backend_neutral

HOLD = """
import sys, time
from keras_vicreg.training.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def write_lock(workdir, **record):
    path = os.path.join(workdir, workdir_lock.LOCK_NAME)
    with open(path, "w") as file:
        json.dump({"host": socket.gethostname(), "pid": 1, "started": "then", "command": "x",
                   "token": "other", **record}, file)
    return path


def test_a_second_job_on_a_live_workdir_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLockedError, match=f"pid {holder.pid} on"):
            WorkdirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait(timeout=60)
    # The holder died without releasing: its lock is stale now and is taken over.
    with WorkdirLock(tmp_path) as lock:
        assert json.load(open(lock.path))["pid"] == os.getpid()
    assert not os.path.exists(os.path.join(tmp_path, workdir_lock.LOCK_NAME))


def test_a_dead_local_holder_is_taken_over_with_a_message(tmp_path, capsys):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    write_lock(str(tmp_path), pid=int(finished.stdout))
    with WorkdirLock(tmp_path):
        pass
    assert f"pid {int(finished.stdout)} on {socket.gethostname()}" in capsys.readouterr().err


def test_a_reused_pid_with_another_start_time_counts_as_dead(tmp_path):
    write_lock(str(tmp_path), pid=os.getpid(), process_start_time=-5)
    with WorkdirLock(tmp_path) as lock:
        assert json.load(open(lock.path))["token"] == lock.token


@pytest.mark.parametrize("content", ["", "{\"host\": "])
def test_an_unreadable_lock_file_is_stale(tmp_path, content):
    with open(os.path.join(tmp_path, workdir_lock.LOCK_NAME), "w") as file:
        file.write(content)
    with WorkdirLock(tmp_path):
        pass


def test_another_hosts_lock_is_stale_only_once_its_heartbeat_stops(tmp_path):
    path = write_lock(str(tmp_path), host="another-host", pid=42)
    with pytest.raises(WorkdirLockedError, match="pid 42 on another-host"):
        WorkdirLock(tmp_path, stale_after_seconds=600).acquire()
    old = time.time() - 601
    os.utime(path, (old, old))
    with WorkdirLock(tmp_path, stale_after_seconds=600) as lock:
        assert json.load(open(lock.path))["host"] == socket.gethostname()


def test_the_holder_heartbeat_keeps_its_lock_fresh(tmp_path):
    with WorkdirLock(tmp_path, stale_after_seconds=1.0, heartbeat_seconds=0.1) as lock:
        old = time.time() - 100
        os.utime(lock.path, (old, old))
        time.sleep(0.5)
        assert time.time() - os.path.getmtime(lock.path) < 1.0


def test_bad_timing_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Received: stale_after_seconds=1"):
        WorkdirLock(tmp_path, stale_after_seconds=1, heartbeat_seconds=5)
