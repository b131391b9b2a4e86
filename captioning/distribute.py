"""Data-parallel training with ``tf.distribute``: a strategy from its name, TF_CONFIG checked
before TensorFlow reads it, and a training loop in which N replicas compute the gradient and the
update one process computes.

    default       no strategy: the single-process path of :func:`captioning.training.fit_decoder`
    mirrored      ``tf.distribute.MirroredStrategy``: every local GPU (the CPU when there is none)
    multiworker   ``tf.distribute.MultiWorkerMirroredStrategy``: the hosts listed in TF_CONFIG,
                  each with its local GPUs (or its CPU); worker 0 (or a 'chief' task) is the chief

Every worker runs the same command on the same data and builds the same global batches (same
seed, same shuffle); each keeps its replicas' slices of every batch (:class:`DistributedBatches`).

Why the result is one process's.  One process minimises Keras's default reduction of the
cross-entropy weighted by the padding mask: the sum of the real words' losses divided by every
position of the batch (captions x padded length; the Keras mask does not reach the loss, the
weights do).  Here each global batch is padded once, to its longest caption, then cut into one
slice per replica, every word weighted by 1 / (captions x padded length) of the *global* batch;
each replica's loss is the plain sum over its slice, the replicas' gradients are summed (one
all-reduce; the embedding's gradient as ``tf.IndexedSlices``, as in one process), and the model's
own optimizer clips (``clipnorm``) and applies that global gradient once (:class:`DistributedTrainer`).
The losses are reported as ``model.fit`` reports them.  Measured on this CPU: equal to the
single-process run to 1e-7 relative, with 1 and 2 replicas and with 2 workers on loopback
(``tests/test_distribute.py``).

What is not the same: dropout.  Keras 3 draws dropout masks from one seed state mirrored on every
replica, so row i of every replica's slice gets the same mask: each caption's mask is still a
fair draw, but the masks of N captions are tied, and the run agrees with one process in
distribution, not in value.

:func:`make_strategy` must run before TensorFlow executes anything in a multi-worker process
(``MultiWorkerMirroredStrategy`` has to come first); importing this module runs nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .data import batch_dataset

STRATEGIES = ("default", "mirrored", "multiworker")


class DistributeError(ValueError):
    """A strategy that cannot be created as asked (a bad name, a missing or malformed TF_CONFIG)."""


def parse_tf_config(text: str | None) -> dict:
    """TF_CONFIG, checked: ``{"cluster": {"worker": ["host:port", ...], "chief": [...]?},
    "task": {"type": "worker" | "chief", "index": i}}``.  Raises :class:`DistributeError` naming
    what is wrong, before TensorFlow would fail on it (or wait for a host that cannot exist)."""
    if text is None or not text.strip():
        raise DistributeError(
            "--strategy multiworker needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
            "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}' "
            "(the same cluster on every host, each with its own task index)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributeError(f"TF_CONFIG is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise DistributeError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise DistributeError("TF_CONFIG has no 'cluster' object (job name -> list of 'host:port')")
    unsupported = sorted(set(cluster) - {"worker", "chief"})
    if unsupported:
        raise DistributeError(f"TF_CONFIG's cluster has job(s) {unsupported}: only 'worker' (and optionally one "
                              "'chief') are supported; parameter servers and evaluators are not")
    seen = set()
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise DistributeError(f"TF_CONFIG cluster[{job!r}] must be a non-empty list of 'host:port'")
        if job == "chief" and len(addresses) != 1:
            raise DistributeError(f"TF_CONFIG cluster['chief'] must list exactly one address, not {len(addresses)}")
        for address in addresses:
            _check_address(address, job)
            if address in seen:
                raise DistributeError(f"TF_CONFIG lists {address} twice: every task needs its own host:port")
            seen.add(address)
    if not isinstance(task, dict):
        raise DistributeError("TF_CONFIG has no 'task' object ({'type': 'worker', 'index': i})")
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster:
        raise DistributeError(f"TF_CONFIG task type {kind!r} is not a job of the cluster ({sorted(cluster)})")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[kind]):
        raise DistributeError(f"TF_CONFIG task index {index!r} is out of range: cluster[{kind!r}] has "
                              f"{len(cluster[kind])} address(es), so 0..{len(cluster[kind]) - 1}")
    return config


def _check_address(address: Any, job: str) -> None:
    if not isinstance(address, str) or ":" not in address:
        raise DistributeError(f"TF_CONFIG cluster[{job!r}] entry {address!r} is not 'host:port'")
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]:port
    if not host:
        raise DistributeError(f"TF_CONFIG cluster[{job!r}] entry {address!r} has no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributeError(f"TF_CONFIG cluster[{job!r}] entry {address!r}: port must be 1-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if any(c.isspace() or c in "/\\@" for c in host):
            raise DistributeError(f"TF_CONFIG cluster[{job!r}] entry {address!r}: {host!r} is not a host name") from None


def chief_of(config: Mapping) -> tuple[str, int]:
    """The (task type, index) that acts as chief: the 'chief' task if there is one, else worker 0."""
    return ("chief", 0) if "chief" in config["cluster"] else ("worker", 0)


def make_strategy(name: str):
    """The ``tf.distribute`` strategy for ``name`` (one of :data:`STRATEGIES`), or None for
    ``default``.  ``multiworker`` checks TF_CONFIG (:func:`parse_tf_config`) first."""
    if name not in STRATEGIES:
        raise DistributeError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    if name == "default":
        return None
    if name == "multiworker":
        parse_tf_config(os.environ.get("TF_CONFIG"))
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _cluster(strategy) -> tuple[dict, str | None, int]:
    """(cluster spec as a dict, this task's type, its index); ({}, None, 0) on one worker."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None or not resolver.task_type:
        return {}, None, 0
    return resolver.cluster_spec().as_dict(), resolver.task_type, int(resolver.task_id)


def num_workers(strategy) -> int:
    """Hosts taking part (1 without a strategy or with ``mirrored``)."""
    cluster, _, _ = _cluster(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def worker_index(strategy) -> int:
    """This host's place among the workers: 0 for the chief, 1.. for the others."""
    cluster, kind, index = _cluster(strategy)
    if kind is None:
        return 0
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))] + \
            [("worker", i) for i in range(len(cluster.get("worker", [])))]
    return order.index((kind, index))


def is_chief(strategy) -> bool:
    """True where checkpoints, bundles, evaluation and fine-tuning happen: always without a strategy
    or with ``mirrored``; on worker 0 (or the 'chief' task) with ``multiworker``."""
    return worker_index(strategy) == 0


def describe(strategy) -> str:
    if strategy is None:
        return "default (one device)"
    return (f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replica(s) on {num_workers(strategy)} "
            f"worker(s), this is worker {worker_index(strategy)}{' (chief)' if is_chief(strategy) else ''}")


def check_same_on_all_workers(strategy, values: Mapping[str, float]) -> None:
    """Raise :class:`DistributeError` on every worker when some worker holds a different value
    for one of ``values`` (resume epoch, batch count, a digest of the training data): workers
    that disagree would otherwise wait for each other forever, or train on different data."""
    if num_workers(strategy) < 2:
        return
    import tensorflow as tf

    names = list(values)
    local = np.array([[float(values[n]) for n in names]], dtype=np.float64)
    def gather():
        return strategy.gather(strategy.run(tf.constant, args=(local,)), axis=0)

    table = tf.function(gather, autograph=False)().numpy()  # one row per replica
    high, low = table.max(axis=0), table.min(axis=0)
    differ = [f"{n}: {low[i]:.0f} to {high[i]:.0f}" for i, n in enumerate(names) if high[i] != low[i]]
    if differ:
        raise DistributeError("the workers disagree on " + "; ".join(differ) +
                              f" (this is worker {worker_index(strategy)}: {dict(zip(names, local[0].tolist()))}). "
                              "Every worker must run the same command on the same data, and resuming needs "
                              "--runs on storage all workers read (or delete the checkpoints to start afresh)")


def wait_for_all_workers(strategy) -> None:
    """Block until every worker gets here (a one-number all-reduce); a no-op on one worker.  The
    other workers wait at the end of a run while the chief evaluates and fine-tunes, so that none
    of them stops answering the chief's health checks before the chief is done."""
    if num_workers(strategy) < 2:
        return
    import tensorflow as tf

    def barrier():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.ones, args=((),)), axis=None)

    tf.function(barrier, autograph=False)()


class DistributedBatches:
    """A :class:`captioning.data.CaptionBatches` split across ``strategy``'s replicas: each global
    batch (exactly the one the single-process path trains on, padded once to its longest caption)
    cut into one slice per replica, as ``np.array_split`` cuts it, every word weighted by
    1 / (captions x padded length of the global batch) -- the normalisation Keras applies to the
    whole batch in one process -- so that the replicas' summed losses and gradients are the
    global batch's.  A batch with fewer captions than replicas gets weight-0 copies of its first
    caption, so that no replica receives an empty slice.

    The batch order is drawn by :meth:`new_epoch`, once per epoch, as one pass over the
    ``CaptionBatches`` draws it."""

    def __init__(self, batches, strategy):
        self.batches = batches
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync)
        self.order: list[np.ndarray] = []
        self.new_epoch()

    def new_epoch(self) -> None:
        self.order = self.batches._make_batches()

    def __len__(self) -> int:
        return len(self.batches)

    def split(self, members: np.ndarray) -> list[tuple[dict, np.ndarray, np.ndarray]]:
        """One global batch as ``replicas`` slices ``(inputs, target, weights)``."""
        padded = np.concatenate([members, np.repeat(members[:1], max(0, self.replicas - len(members)))])
        inputs, target, weights = self.batches._batch(padded)
        weights[len(members):] = 0.0  # the copies count for nothing
        weights /= len(members) * target.shape[1]
        bounds = np.cumsum([0] + [len(part) for part in np.array_split(np.arange(len(padded)), self.replicas)])
        return [({name: value[start:end] for name, value in inputs.items()}, target[start:end], weights[start:end])
                for start, end in zip(bounds[:-1], bounds[1:])]

    def _replica_dataset(self, context):
        """The slices of this input pipeline's replicas, in replica order, batch after batch."""
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices():
            for members in self.order:
                yield from self.split(members)[first:first + local]

        return batch_dataset(slices, self.batches.features.shape[1:], len(self) * local)

    def dataset(self):
        """A distributed dataset: one global batch per step.  Draw the order (:meth:`new_epoch`)
        before creating an iterator for the next epoch."""
        return self.strategy.distribute_datasets_from_function(self._replica_dataset)


class DistributedTrainer:
    """Epochs of a compiled decoder under ``strategy``, the loss and the update of one process.

    Not ``model.fit``: under a multi-worker strategy Keras 3.15's ``fit`` fails before the first
    step with dict inputs (keras-team/keras#20329: it averages an input batch across workers to
    build the model), then when it reduces the scalar metrics across workers ("Invalid reduction
    dimension 0 for input with 0 dimensions"; keras-team/keras#20585 asks whether Keras 3 supports
    this strategy at all), and under any strategy it clips gradients per replica, before summing.  Here each step sums the
    replicas' gradients (one all-reduce), and the model's own optimizer -- the one saved in
    ``last.keras``, with its ``clipnorm`` -- clips and applies the global gradient once, on every
    replica's copy of the weights.  Losses are reported as ``fit`` reports them: each batch's loss
    weighted by its number of captions."""

    def __init__(self, model, strategy, train, dev, label_smoothing: float = 0.0):
        import tensorflow as tf

        self.model, self.strategy, self.label_smoothing = model, strategy, label_smoothing
        self.train, self.dev = DistributedBatches(train, strategy), DistributedBatches(dev, strategy)
        self._train_data, self._dev_data = self.train.dataset(), self.dev.dataset()
        if not model.optimizer.built:  # a resumed model's optimizer comes built, with its state
            with strategy.scope():
                model.optimizer.build(model.trainable_variables)
        self._train_step = tf.function(self._train_step_fn, reduce_retracing=True)
        self._dev_step = tf.function(self._dev_step_fn, reduce_retracing=True)
        self._epochs = 0

    def _replica_loss(self, inputs, target, weights, training: bool):
        import tensorflow as tf

        from .training import word_losses

        probs = self.model(inputs, training=training)
        return tf.reduce_sum(word_losses(target, probs, self.label_smoothing) * weights)

    def _train_step_fn(self, iterator):
        import tensorflow as tf

        variables = self.model.trainable_variables

        def replica_step(inputs, target, weights):
            with tf.GradientTape() as tape:
                loss = self._replica_loss(inputs, target, weights, training=True)
            # The embedding's gradient stays tf.IndexedSlices (one row per word in the slice): summing
            # gathers the replicas' rows, which is the one-process gradient, and Adam treats it as it does there.
            gradients = tape.gradient(loss, variables)
            context = tf.distribute.get_replica_context()
            return context.all_reduce(tf.distribute.ReduceOp.SUM, [*gradients, loss])

        summed = self.strategy.run(replica_step, args=next(iterator))
        summed = [self.strategy.experimental_local_results(value)[0] for value in summed]
        self.model.optimizer.apply(summed[:-1], variables)  # cross-replica: clip once, update every copy
        return summed[-1]

    def _dev_step_fn(self, iterator):
        import tensorflow as tf

        losses = self.strategy.run(lambda *batch: self._replica_loss(*batch, training=False), args=next(iterator))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    def _pass(self, batches: DistributedBatches, data, step) -> float:
        iterator = iter(data)
        losses = [step(iterator) for _ in batches.order]  # read back at the end: no wait after each step
        sizes = [len(members) for members in batches.order]
        return sum(float(loss) * size for loss, size in zip(losses, sizes)) / sum(sizes)

    def epoch(self) -> tuple[float, float]:
        """One pass over the training batches, then the dev loss: ``(loss, val_loss)``."""
        if self._epochs:
            self.train.new_epoch()  # one shuffle per epoch, as each pass over the CaptionBatches draws one
        self._epochs += 1
        loss = self._pass(self.train, self._train_data, self._train_step)
        return loss, self._pass(self.dev, self._dev_data, self._dev_step)
