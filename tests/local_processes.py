"""Helpers for tests that stand several hosts in for processes on 127.0.0.1.

Free ports for the processes' rendezvous, a bounded wait that kills every process past its time
(a test never leaves a process behind), and the distance between two sets of weights.
"""

import socket
import subprocess
import time

import numpy as np
import pytest


def free_ports(count=1):
    """`count` distinct ports free on 127.0.0.1 now (all held open together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port():
    return free_ports(1)[0]


def finish(processes, timeout_s):
    """Each process's (return code, output, time it was seen to end), in order.

    Kills every process and fails the test if they are not all done within `timeout_s` (counted
    from this call). The processes must have been started with stdout piped, as text.
    """
    deadline = time.monotonic() + timeout_s
    results = []
    try:
        for process in processes:
            remaining = max(deadline - time.monotonic(), 0.1)
            output = process.communicate(timeout=remaining)[0]
            results.append((process.returncode, output, time.time()))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
            process.wait()
        pytest.fail(f"the processes did not finish within {timeout_s} s")
    return results


def finish_successfully(processes, timeout_s):
    """`finish`, then fails the test with the output of the first process that did not exit 0."""
    results = finish(processes, timeout_s)
    for returncode, output, _ in results:
        assert returncode == 0, output[-4000:]
    return results


def worst(actuals, expecteds):
    """Largest |a - e| over every tensor taken as one vector (in float64), relative to the expected
    values' scale where that exceeds 1.

    float32 rounding is relative to the size of the terms summed, so a tensor that is zero in exact
    arithmetic (a bias's gradient before BatchNorm) is compared on the scale of the whole set.
    """
    actual = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in actuals])
    expected = np.concatenate([np.ravel(np.asarray(e, np.float64)) for e in expecteds])
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1.0))
