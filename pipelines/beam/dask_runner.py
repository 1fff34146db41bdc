"""rnnflow's DaskRunner: Beam 2.77's ``DaskRunner`` with the changes a real corpus needs (part of
the runner adapter, :mod:`pipelines.beam.runners`; imported only when ``--runner DaskRunner`` is used).

Beam's DaskRunner turns each leaf transform into a ``dask.bag`` operation. As shipped (2.77) it cannot
prepare a corpus of any size in reasonable time:

1. **Side inputs are recomputed in every task.** A side input is handed to each partition as the
   *lazy* bag that produces it, and each task iterates it (``list(bag)``), which runs the side
   input's whole upstream graph again, inside the task. In the prepare job the batch count, the
   vocabulary, the label set and the split summaries are side inputs, each downstream of reading and
   tokenizing the corpus, and some of them downstream of other side inputs: every partition re-read
   and re-tokenized the corpus several times (1x Penn Treebank did not finish in 4 minutes).
   Here each side input is computed **once**, on the cluster, and its (small) value is handed to the
   tasks that read it.
2. **A collection read by several transforms is computed once per reader.** Dask computes a shared
   lazy bag anew for each graph it is part of; here such a bag is ``persist``-ed on the cluster, and
   forgotten as soon as all the steps that read it are built, so that its memory is released once
   they have run (not at the end of the job).
3. **Everything runs in one partition.** ``beam.Create`` becomes one partition per 128 elements (so a
   corpus of fewer than 128 files is read by one task) and ``beam.Reshuffle`` does nothing, so the
   whole job ran in one task on one worker. Here ``Create`` and ``Reshuffle`` use
   ``--dask_npartitions`` partitions, by default :data:`PARTITIONS_PER_THREAD` per worker thread of the
   cluster (``--dask_partition_size`` is honoured as in Beam). One source file is still read by one
   task; the records are split into partitions after it (``Reshuffle``), so a corpus of a few large
   files reads serially but tokenizes and encodes in parallel: split very large files.

4. **A DoFn's outputs could be handed to the wrong partition.** Beam's ``ParDo`` puts one output list
   (and one DoFn instance) into the task arguments shared by all of a step's partitions, and each
   partition returns *everything* in that list: where partitions run in one process from the same
   objects (as when a task iterates a side input), outputs repeat — a ``CombineGlobally(sum)`` of
   0..5 read as a side input came out as 30, not 15. Here each partition makes its own DoFn copy
   and output list; outputs emitted from ``finish_bundle`` are kept too.

5. **Every grouping went through windowing steps, and no combine was lifted.** Beam's translation of
   ``GroupByKey`` wraps every element in a ``WindowedValue`` (``ReifyWindows``), groups, and unwraps them
   again (``GroupAlsoByWindow``); a ``CombinePerKey`` (and so ``Count.PerElement``, ``Count.Globally``,
   ``CombineGlobally``) sent *every* element through that grouping before combining: the token count of
   the vocabulary grouped one element per token of the corpus. In the global window (the only one the
   prepare job uses) a ``GroupByKey`` here is one ``dask.bag.groupby`` into ``--dask_npartitions``
   partitions, and a ``CombinePerKey`` without side inputs is a ``dask.bag.foldby``: each partition adds
   its elements into one accumulator per key, and only the accumulators are merged, as Beam's other
   runners lift combiners.

Only the global window is supported (batch jobs such as rnnflow's): elements travel between steps
without their windows, as in Beam's translation, which therefore grouped windowed elements across
windows. A pipeline that windows its elements is refused with an error naming the step.

6. **Only the last step ran.** Beam's runner computes the bag of the pipeline's last leaf, so a branch
   that does not feed it (a count that is only logged, a second output written on its own) silently
   never ran. Here every leaf that no step reads is computed (and its elements dropped on the
   workers, not gathered).

The translation of ``Flatten``, the options and the result are Beam's own.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import typing as t

import dask
import dask.bag as db
import apache_beam as beam
from apache_beam import pvalue
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as evaluators
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.dask.overrides import _Reshuffle, dask_overrides
from apache_beam.transforms.combiners import curry_combine_fn
from apache_beam.transforms.core import CallableWrapperDoFn, _DoFnParam
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.trigger import DefaultTrigger
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, WindowFn
from apache_beam.utils.windowed_value import WindowedValue

log = logging.getLogger(__name__)

PARTITIONS_PER_THREAD = 2  # default --dask_npartitions: partitions per worker thread of the cluster


@dataclasses.dataclass
class SideInputValues:
    """A side input's elements, computed once (what Beam's ``DaskBagWindowedIterator`` recomputes per
    task): iterated by :class:`~apache_beam.transforms.sideinputs.SideInputMap` in each task."""

    values: list
    window_fn: WindowFn | None

    def __iter__(self):
        for value in self.values:
            yield evaluators.get_windowed_value(value, self.window_fn)


_GLOBAL_WINDOWS: tuple | None = None
_WRAPPED = (WindowedValue, beam.window.TimestampedValue, beam.pvalue.TaggedOutput)


def _windowed(item, window_fn):
    """``item`` as a ``WindowedValue`` (Beam's ``get_windowed_value``, with the global window made once:
    Beam's builds a ``GlobalWindow`` per element, reading its timestamp from a proto constant)."""
    global _GLOBAL_WINDOWS
    if isinstance(item, WindowedValue):
        return item
    if type(item) is not beam.pvalue.TaggedOutput and not isinstance(item, beam.window.TimestampedValue):
        if _GLOBAL_WINDOWS is None:
            _GLOBAL_WINDOWS = (GlobalWindow(),)
        return WindowedValue(item, 0, _GLOBAL_WINDOWS)
    return evaluators.get_windowed_value(item, window_fn)


def _plain_callable(fn, side_inputs) -> bool:
    """Whether ``fn`` is a ``Map``/``FlatMap``/``Filter`` function (a ``CallableWrapperDoFn``) without
    side inputs or ``DoFn.*Param`` arguments: it can then be called directly, without Beam's invoker."""
    if type(fn) is not CallableWrapperDoFn or side_inputs:
        return False
    defaults = DoFnSignature(fn).process_method.defaults
    return not any(isinstance(value, _DoFnParam) for value in defaults)


def _call_each(items, process, args, kwargs) -> list:
    """A plain function's outputs over a partition (windows, timestamps and tags dropped, as the invoker's
    receivers here do: every step runs in the global window)."""
    out = []
    for item in items:
        results = process(item, *args, **kwargs)
        if results is None:
            continue
        for value in results:
            out.append(value.value if isinstance(value, _WRAPPED) else value)
    return out


def run_bundle(items, fn, window_fn, label: str, side_inputs, args, kwargs) -> list:
    """One partition through a DoFn: a copy of ``fn`` and an output list of its own (set up, started,
    every element, finished, torn down); returns the outputs, ``finish_bundle``'s included. A plain
    ``Map``/``FlatMap``/``Filter`` function is called directly (Beam's invoker costs several µs per
    element: a ``WindowedValue`` in and out)."""
    if _plain_callable(fn, side_inputs):
        return _call_each(items, fn.process, args, kwargs)
    receivers = evaluators.OneReceiver()
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                             per_element_output_counter=None, output_batch_converter=None,
                             process_yields_batches=False, process_batch_yields_elements=False)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(copy.deepcopy(fn)), handler, context=DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=list(args), input_kwargs=dict(kwargs), user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(_windowed(item, window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    return [value.value for value in receivers.values]


def _pardo(node: AppliedPTransform, input_bag: db.Bag, side_inputs) -> db.Bag:
    transform = node.transform
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(node.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    return input_bag.map_partitions(run_bundle, transform.fn, window_fn, transform.label, side_inputs,
                                    list(args), dict(kwargs))


class _GlobalGroupByKey(beam.PTransform):
    """A ``GroupByKey`` in the global window: one ``dask.bag.groupby`` (a leaf of this runner)."""

    def expand(self, pcoll):
        return pvalue.PCollection.from_(pcoll)


class _LiftedCombinePerKey(beam.PTransform):
    """A ``CombinePerKey`` without side inputs in the global window: a ``dask.bag.foldby`` (a leaf)."""

    def __init__(self, fn: beam.CombineFn):
        super().__init__()
        self.fn = fn

    def expand(self, pcoll):
        return pvalue.PCollection.from_(pcoll)


def _global(windowing) -> bool:
    return isinstance(windowing.windowfn, GlobalWindows) and windowing.triggerfn == DefaultTrigger()


def _in_global_window(node: AppliedPTransform) -> bool:
    return _global(next(iter(node.main_inputs.values())).windowing)


def _check_global_window(node: AppliedPTransform) -> None:
    for output in node.outputs.values():
        if isinstance(output, pvalue.PCollection) and not _global(output.windowing):
            raise ValueError(f"rnnflow's DaskRunner runs pipelines in the global window only, and step "
                             f"{node.full_label!r} windows its output ({output.windowing.windowfn!r}): "
                             f"run this pipeline on another runner")


class _GroupByKeyOverride(PTransformOverride):
    def matches(self, node: AppliedPTransform) -> bool:
        return type(node.transform) is beam.GroupByKey and _in_global_window(node)

    def get_replacement_transform_for_applied_ptransform(self, node: AppliedPTransform):
        return _GlobalGroupByKey()


class _CombinePerKeyOverride(PTransformOverride):
    def matches(self, node: AppliedPTransform) -> bool:
        return (type(node.transform) is beam.CombinePerKey and not node.transform.side_inputs
                and _in_global_window(node))

    def get_replacement_transform_for_applied_ptransform(self, node: AppliedPTransform):
        transform = node.transform
        return _LiftedCombinePerKey(curry_combine_fn(transform.fn, transform.args, transform.kwargs))


def overrides() -> list[PTransformOverride]:
    """This runner's replacements, then Beam's (a combine is replaced before the grouping inside it)."""
    return [_CombinePerKeyOverride(), _GroupByKeyOverride(), *dask_overrides()]


def _key(item):
    return item[0]


def _group_values(item):
    key, items = item
    return key, [value for _, value in items]


class _Folder:
    """A ``CombineFn`` as ``foldby``'s functions: a fresh accumulator per key and partition, elements
    added to it, accumulators merged, outputs extracted (set up once per copy, in the task)."""

    def __init__(self, fn: beam.CombineFn):
        self.fn = fn
        self._ready = False

    def __getstate__(self):
        return {"fn": self.fn, "_ready": False}

    def create(self):
        if not self._ready:
            self.fn.setup()
            self._ready = True
        return self.fn.create_accumulator()

    def add(self, accumulator, item):
        return self.fn.add_input(accumulator, item[1])

    def merge(self, first, second):
        return self.fn.merge_accumulators([first, second])

    def extract(self, item):
        if not self._ready:
            self.fn.setup()
            self._ready = True
        return item[0], self.fn.extract_output(item[1])


def combine_per_key(bag: db.Bag, fn: beam.CombineFn) -> db.Bag:
    """``(key, value)`` → ``(key, combined)``: each partition folds its values per key, then only the
    accumulators are merged (a lifted combine)."""
    folder = _Folder(fn)
    return bag.foldby(_key, folder.add, folder.create, folder.merge).map(folder.extract)


class _Readers(PipelineVisitor):
    """How many leaf transforms read each leaf's output (main and side inputs)."""

    def __init__(self):
        self.count: collections.Counter = collections.Counter()

    def visit_transform(self, node: AppliedPTransform) -> None:
        for value in node.inputs:
            if not isinstance(value, pvalue.PBegin):
                self.count[value.producer] += 1
        for side in node.side_inputs:
            self.count[side.pvalue.producer] += 1


class _BagBuilder(PipelineVisitor):
    """Leaf transforms → dask bags, as Beam's visitor does, with side inputs computed once, shared
    collections persisted, and ``Reshuffle`` repartitioning (see the module docstring)."""

    def __init__(self, client, bag_kwargs: dict, readers: collections.Counter, partitions: int):
        self.client = client
        self.bag_kwargs = bag_kwargs
        self.readers = readers
        self.partitions = partitions
        self.unread = collections.Counter(readers)  # readers not yet built, per producer
        self.bags: dict[AppliedPTransform, db.Bag] = {}
        self.sinks: list[db.Bag] = []  # leaves no step reads: what the job computes
        self._side_values: dict[AppliedPTransform, list] = {}

    def _inputs(self, node: AppliedPTransform, op) -> t.Any:
        bags = [None if isinstance(value, pvalue.PBegin) else self.bags[value.producer] for value in node.inputs]
        if len(bags) == 1 and not isinstance(op, evaluators.Flatten):
            return bags[0]
        return bags

    def _side_input(self, side) -> SideInputMap:
        producer = side.pvalue.producer
        if producer not in self._side_values:
            self._side_values[producer] = self.client.compute(self.bags[producer]).result()
            log.info("computed side input %s (%d element(s))", producer.full_label, len(self._side_values[producer]))
        return SideInputMap(type(side), side._view_options(),
                            SideInputValues(self._side_values[producer], side._window_mapping_fn))

    def visit_transform(self, node: AppliedPTransform) -> None:
        _check_global_window(node)
        if isinstance(node.transform, _Reshuffle):
            bag = self._inputs(node, None).repartition(self.partitions)
        elif isinstance(node.transform, _GlobalGroupByKey):
            bag = self._inputs(node, None).groupby(_key, npartitions=self.partitions).map(_group_values)
        elif isinstance(node.transform, _LiftedCombinePerKey):
            bag = combine_per_key(self._inputs(node, None), node.transform.fn)
        elif type(node.transform) is beam.ParDo:
            side_inputs = [self._side_input(side) for side in node.side_inputs] or None
            bag = _pardo(node, self._inputs(node, None), side_inputs)
        else:
            op = evaluators.TRANSLATIONS.get(node.transform.__class__, evaluators.NoOp)(
                node, bag_kwargs=self.bag_kwargs)
            side_inputs = [self._side_input(side) for side in node.side_inputs] or None
            bag = op.apply(input_bag=self._inputs(node, op) if node.inputs else None, side_inputs=side_inputs)
        if self.readers[node] > 1:
            bag = self.client.persist(bag)
        self.bags[node] = bag
        if self.readers[node] == 0:
            self.sinks.append(bag)
        self._release_inputs(node)

    def _release_inputs(self, node: AppliedPTransform) -> None:
        """Forgets the bags whose readers are all built: a persisted collection then stays on the cluster
        only until the steps that read it have run (not until the end of the job)."""
        producers = [value.producer for value in node.inputs if not isinstance(value, pvalue.PBegin)]
        for producer in producers + [side.pvalue.producer for side in node.side_inputs]:
            self.unread[producer] -= 1
            if self.unread[producer] == 0:
                self.bags.pop(producer, None)


def _drain(items) -> list:
    """Runs a sink partition for its effects; nothing is sent back to the client."""
    for _ in items:
        pass
    return []


def default_partitions(client) -> int:
    """:data:`PARTITIONS_PER_THREAD` × the cluster's worker threads (at least 1)."""
    return max(1, PARTITIONS_PER_THREAD * sum(client.nthreads().values()))


class DaskRunner(beam_dask.DaskRunner):
    """Beam's ``DaskRunner`` with side inputs computed once, shared collections persisted and real
    partitioning (see the module docstring). Options: Beam's (``--dask_client_address``,
    ``--dask_npartitions``, ``--dask_partition_size``, ...)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        if not bag_kwargs:
            bag_kwargs = {"npartitions": default_partitions(client)}
        partitions = bag_kwargs.get("npartitions") or default_partitions(client)
        log.info("Dask cluster %s: %d worker thread(s), %s", client.scheduler.address,
                 sum(client.nthreads().values()), bag_kwargs)

        pipeline.replace_all(overrides())
        readers = _Readers()
        pipeline.visit(readers)
        builder = _BagBuilder(client, bag_kwargs, readers.count, partitions)
        pipeline.visit(builder)
        sinks = dask.optimize(*[bag.map_partitions(_drain) for bag in builder.sinks])
        futures = client.compute(list(sinks))
        builder.bags.clear()
        builder.sinks.clear()
        return beam_dask.DaskRunnerResult(client, futures)
