"""TensorFlow: the processes of a `tf.distribute.MultiWorkerMirroredStrategy` job.

The job is described by the TF_CONFIG environment variable (`{"cluster": {"worker": ["host:port",
...]}, "task": {"type": "worker", "index": i}}`, with an optional single "chief" listed before the
workers), which MultiWorkerMirroredStrategy reads when it is created. `check_tf_config` reads and
checks it without TensorFlow, so that a malformed one is a clear error before the strategy starts
its servers and waits for peers that will never come.

`any_process` and `barrier` are collectives of the strategy in scope
(`tf.distribute.get_strategy()`, so `fit`'s callbacks may call them while `fit` runs in
`strategy.scope()`): an all-reduce of one value per replica, which every worker must reach in the
same order, as it must reach each step.

A dead peer: MultiWorkerMirroredStrategy starts TensorFlow's coordination service, whose
heartbeats fail every collective of the survivors with `UnavailableError` once a peer has died or
stopped answering, without any option here. What they do not catch is a peer alive but stuck
before a collective (a hung input pipeline or file system, workers reaching collectives in
different orders): `multi_worker_strategy(timeout_seconds)` bounds every collective for that.
"""

import json
import os


def check_tf_config(environ=None):
    """TF_CONFIG parsed and checked, or None when it is unset or empty.

    Returns:
        A dict with "processes" (the "host:port" of every process, chief first) and "index"
        (this process's position in that list).

    Raises:
        ValueError: TF_CONFIG is not JSON, lacks `cluster.worker` (a non-empty list of
            "host:port" strings) or `task` (type "worker" or "chief", index in range).
    """
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={raw!r}")
    cluster = config.get("cluster") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    chiefs = cluster.get("chief", []) if isinstance(cluster, dict) else None
    if not _addresses(workers) or not isinstance(chiefs, list) or len(chiefs) > 1 or (
        chiefs and not _addresses(chiefs)
    ):
        raise ValueError(
            'TF_CONFIG must hold "cluster": {"worker": ["host:port", ...]} (and at most one '
            f'"chief"), as MultiWorkerMirroredStrategy reads it. Received: TF_CONFIG={raw!r}'
        )
    task = config.get("task")
    role = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    members = {"chief": chiefs, "worker": workers}.get(role, [])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(members):
        raise ValueError(
            'TF_CONFIG must hold "task": {"type": "worker" (or "chief"), "index": i} with i '
            f"indexing that list of cluster addresses. Received: TF_CONFIG={raw!r}"
        )
    first = len(chiefs) if role == "worker" else 0
    return {"processes": chiefs + workers, "index": first + index}


def _addresses(value):
    return isinstance(value, list) and value and all(
        isinstance(item, str) and ":" in item for item in value
    )


def process_index():
    """This worker's index: its position in TF_CONFIG's cluster (chief first); 0 without one."""
    config = check_tf_config()
    return 0 if config is None else config["index"]


def process_count():
    """The number of workers in TF_CONFIG's cluster; 1 without one."""
    config = check_tf_config()
    return 1 if config is None else len(config["processes"])


def any_process(flag):
    """True on every worker when `flag` is True on any: a SUM all-reduce of one value per replica
    across the workers (collective: every worker calls it), under the strategy in scope or else
    the one `multi_worker_strategy` made."""
    import tensorflow as tf

    strategy = _strategy_across_workers()
    value = 1.0 if flag else 0.0
    with strategy.scope():
        per_replica = strategy.run(lambda: tf.constant(value, tf.float32))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return float(total) > 0.0


def barrier():
    """Returns once every worker has reached it (an all-reduce all of them take part in)."""
    any_process(False)


_made = []  # the strategy `multi_worker_strategy` made, for collectives outside its scope


def _strategy_across_workers():
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy
    if _made:
        return _made[-1]
    raise RuntimeError(
        "any_process and barrier are collectives of a MultiWorkerMirroredStrategy: make it with "
        "multi_worker_strategy() (distribute.get_strategy('multi_worker')) or call them inside "
        f"its scope. Received: {type(strategy).__name__} in scope, {process_count()} workers in "
        "TF_CONFIG"
    )


def multi_worker_strategy(timeout_seconds=None):
    """`tf.distribute.MultiWorkerMirroredStrategy` from TF_CONFIG, checked first.

    Args:
        timeout_seconds: the longest any collective (the all-reduce of gradients, of BatchNorm
            statistics, of `any_process`) may wait, as `CommunicationOptions(timeout_seconds=...)`:
            a worker whose peer is alive but does not reach the collective then fails with
            `DeadlineExceededError` instead of waiting for it (a dead peer is caught by the
            coordination service's heartbeats either way). It must exceed the longest gap between
            two workers reaching a collective: the first step's tracing, a checkpoint or an
            evaluation that one worker runs alone. None: no bound (TensorFlow's default).

    Returns:
        The strategy; create it first thing, before any other TensorFlow op.
    """
    import tensorflow as tf

    check_tf_config()
    if timeout_seconds is None:
        options = tf.distribute.experimental.CommunicationOptions()
    elif isinstance(timeout_seconds, bool) or not timeout_seconds > 0:
        raise ValueError(
            f"`timeout_seconds` must be > 0 or None. Received: timeout_seconds={timeout_seconds!r}"
        )
    else:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    _made.append(tf.distribute.MultiWorkerMirroredStrategy(communication_options=options))
    return _made[-1]
