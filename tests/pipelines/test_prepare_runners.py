"""One prepare job, every runner, the same bytes: the in-process default against Beam's multi-process
DirectRunner, the PortableRunner with an external worker pool and the DaskRunner on a local Dask
cluster (each service started here on 127.0.0.1, see ``services.py``), on a language-model corpus and
a classification corpus that both have rejects of every kind and duplicates. Plus the shape of the
job's graph that lets it run on Dask (no multi-output ParDo, nothing emitted from ``finish_bundle``).
"""

import json
import os

import apache_beam as beam
import pytest
import yaml

from pipelines import cli, datasets, prepare
from pipelines.beam.runners import local_runner
from pipelines.config import DataConfig
from services import beam_worker_pool, dask_cluster, show_logs_on_failure

MAX_LENGTH = 8


# ------------------------------------------------------------------------------------ corpora
def _lm_corpus(root):
    """Two text files: invalid UTF-8, blank, too long, duplicated lines (one across the files)."""
    lines = {"a.txt": [], "b.txt": []}
    for name, n in (("a.txt", 50), ("b.txt", 30)):
        for number in range(1, n + 1):
            words = ["the", "cat", "sat", "on", "a", "mat"][: 1 + number % 5] + [f"{name[0]}{number % 23}"]
            lines[name].append(" ".join(words).encode())
    a, b = lines["a.txt"], lines["b.txt"]
    a[2] = b"caf\xe9 latin-1 bytes"  # line 3
    a[4] = b"  \t "  # line 5
    a[6] = b" ".join([b"word"] * (MAX_LENGTH + 2))  # line 7
    a[9] = a[8]  # line 10 repeats line 9
    b[3] = a[8]  # b.txt line 4 too
    for name, rows in lines.items():
        (root / name).write_bytes(b"\n".join(rows) + b"\n")
    config = DataConfig(dataset="text", files=[str(root / "*.txt")], max_length=MAX_LENGTH, dedupe=True,
                        split={"valid": 0.2, "test": 0.2, "seed": 1}, num_shards=2, max_lines={"train": 40})
    a_path, b_path = str(root / "a.txt"), str(root / "b.txt")
    expected = [(a_path, 3, "invalid_utf8"), (a_path, 5, "empty"), (a_path, 7, "too_long"),
                (a_path, 10, "duplicate"), (b_path, 4, "duplicate")]
    return config, expected


def _classification_corpus(root):
    """JSONL, stratified split: bad JSON, invalid UTF-8, an empty and a too-long text, duplicates (the
    same and another label) and a label seen once, which the split sends to test (unseen in training)."""
    rows = []
    for i in range(30):
        label = ("pos", "neg", "neu")[i % 3]
        rows.append(json.dumps({"text": f"{label}word common doc{i} shared", "label": label}).encode())
    rows.insert(5, b"{not json")  # line 6
    rows.insert(8, b'{"text": "caf\xe9", "label": "pos"}')  # line 9
    rows.insert(11, json.dumps({"text": "   ", "label": "neg"}).encode())  # line 12
    rows.insert(14, json.dumps({"text": " ".join(["long"] * (MAX_LENGTH + 1)), "label": "neu"}).encode())  # line 15
    rows.append(rows[0])  # line 35: a duplicate of line 1
    rows.append(json.dumps({"text": json.loads(rows[0])["text"], "label": "neg"}).encode())  # line 36: another label
    rows.append(json.dumps({"text": "a rare one", "label": "rare"}).encode())  # line 37
    path = root / "docs.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    config = DataConfig(dataset="jsonl", files=[str(path)], max_length=MAX_LENGTH, num_shards=2,
                        split={"method": "stratified", "valid": 0.3, "test": 0.3, "seed": 2})
    p = str(path)
    expected = [(p, 6, "bad_json"), (p, 9, "invalid_utf8"), (p, 12, "empty"), (p, 15, "too_long"),
                (p, 35, "duplicate"), (p, 36, "duplicate")]
    return config, expected


CORPORA = {"lm": _lm_corpus, "classification": _classification_corpus}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    out = {}
    for name, make in CORPORA.items():
        root = tmp_path_factory.mktemp(f"corpus_{name}")
        out[name] = make(root)
    return out


def _prepare(config: DataConfig, output_dir, beam_args=None):
    return prepare.prepare(config.model_copy(update={"output_dir": str(output_dir)}), beam_args=beam_args)


@pytest.fixture(scope="module")
def reference(corpora, tmp_path_factory):
    """Each corpus prepared by the in-process default runner."""
    return {name: _prepare(config, tmp_path_factory.mktemp(f"ref_{name}")) for name, (config, _) in corpora.items()}


def _files(directory) -> dict[str, bytes]:
    out = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def assert_same_output(reference_dir, other_dir, runner: str, beam_args: list[str]) -> None:
    """Every file byte for byte; the manifests equal but for ``runner``."""
    assert other_dir.name == reference_dir.name  # the same fingerprint
    want, got = _files(reference_dir), _files(other_dir)
    assert sorted(got) == sorted(want)
    want_manifest, got_manifest = json.loads(want.pop("manifest.json")), json.loads(got.pop("manifest.json"))
    assert got_manifest.pop("runner") == {"name": runner, "args": beam_args}
    assert want_manifest.pop("runner") == {"name": "DirectRunner", "args": []}
    assert got_manifest == want_manifest
    for name in sorted(want):
        assert got[name] == want[name], f"{name} differs from the in-process run's"


# ---------------------------------------------------------------------- (a) in-process default
def _rejected(data_dir):
    manifest = prepare.load_manifest(data_dir)
    with open(data_dir / manifest["rejected"]["path"], encoding="utf-8") as f:
        return manifest, [json.loads(line) for line in f]


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_the_reference_run_rejects_what_the_corpus_holds(corpus, corpora, reference):
    """What the other runners must reproduce is not empty: every reject with its reason, shards of every split."""
    _, expected = corpora[corpus]
    manifest, rows = _rejected(reference[corpus])
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == expected
    assert manifest["rejected"]["count"] == len(expected)
    for split in ("train", "valid", "test"):
        assert manifest["splits"][split]["examples"] > 0, split
        assert all((reference[corpus] / name).stat().st_size > 0 for name in manifest["splits"][split]["shards"])
    assert [r["detail"] for r in rows if r["reason"] == "duplicate"][0].startswith("same content as ")


def test_the_classification_reference_keeps_the_label_unseen_in_training(reference):
    manifest = prepare.load_manifest(reference["classification"])
    assert manifest["splits"]["test"]["unseen"] == {"examples": 1, "labels": {"rare": 1}}
    assert (reference["classification"] / manifest["unseen_labels"]["path"]).read_text() == "rare\n"
    assert "rare" not in (reference["classification"] / manifest["labels"]["path"]).read_text().split()


# ------------------------------------------------------------ (b) multi-process DirectRunner
@pytest.mark.timeout(240)
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_multi_processing_direct_runner_writes_the_same_bytes(corpus, corpora, reference, tmp_path):
    beam_args = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    other = _prepare(corpora[corpus][0], tmp_path, beam_args)
    assert_same_output(reference[corpus], other, "DirectRunner", beam_args)


# ----------------------------------------------- (c) PortableRunner, external SDK worker pool
@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    with beam_worker_pool(tmp_path_factory.mktemp("worker_pool")) as pool:
        yield pool


@pytest.mark.timeout(240)
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_portable_runner_with_external_workers_writes_the_same_bytes(corpus, corpora, reference, worker_pool,
                                                                     tmp_path):
    address, services = worker_pool
    beam_args = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                 f"--environment_config={address}"]
    with show_logs_on_failure(services):
        other = _prepare(corpora[corpus][0], tmp_path, beam_args)
        assert_same_output(reference[corpus], other, "PortableRunner", beam_args)


# ------------------------------------------------------------------- (d) DaskRunner, 2 workers
@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    pytest.importorskip("distributed")
    with dask_cluster(tmp_path_factory.mktemp("dask"), workers=2) as cluster:
        yield cluster


@pytest.mark.timeout(240)
def test_dask_runner_from_the_command_line_writes_the_same_bytes(corpora, reference, dask_scheduler, tmp_path,
                                                                 capsys):
    """``rnnflow prepare CONFIG --runner DaskRunner --dask_client_address tcp://...`` (the LM corpus)."""
    address, services = dask_scheduler
    config = corpora["lm"][0].model_copy(update={"output_dir": str(tmp_path / "out")})
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({"name": "lm-on-dask", "data": config.model_dump(mode="json")}))
    beam_args = ["--runner", "DaskRunner", "--dask_client_address", address]
    with show_logs_on_failure(services):
        assert cli.main(["prepare", str(path), *beam_args]) == 0
        printed = capsys.readouterr().out.strip().splitlines()[-1]
        assert printed == str(tmp_path / "out" / reference["lm"].name)
        assert_same_output(reference["lm"], tmp_path / "out" / reference["lm"].name, "DaskRunner", beam_args)


@pytest.mark.timeout(240)
def test_dask_runner_writes_the_same_bytes_for_a_classification_corpus(corpora, reference, dask_scheduler,
                                                                       tmp_path):
    address, services = dask_scheduler
    beam_args = ["--runner=dask", f"--dask_client_address={address}"]
    with show_logs_on_failure(services):
        other = _prepare(corpora["classification"][0], tmp_path, beam_args)
        assert_same_output(reference["classification"], other, "DaskRunner", beam_args)


def _count_upstream_calls(runner, options, tmp_path):
    """Runs ``Create(0..5) → Mark → (sum as a side input of Add) → Write`` and returns how many times
    ``Mark`` ran, and what was written (``x + sum`` for each x)."""
    calls, written = tmp_path / "calls", tmp_path / "written"
    calls.mkdir()
    written.mkdir()

    def mark(x, folder):  # one file per call, on whichever worker
        import uuid

        open(os.path.join(folder, f"{x}-{uuid.uuid4().hex}"), "w").close()
        return x

    def write(x, folder):
        open(os.path.join(folder, str(x)), "w").close()

    with beam.Pipeline(runner=runner, options=options) as p:
        xs = p | beam.Create(list(range(6))) | "Mark" >> beam.Map(mark, str(calls))
        total = xs | "Sum" >> beam.CombineGlobally(sum)
        _ = (xs | "Add" >> beam.Map(lambda x, t: x + t, beam.pvalue.AsSingleton(total))
             | "Write" >> beam.Map(write, str(written)))
    return len(os.listdir(calls)), sorted(int(name) for name in os.listdir(written))


@pytest.mark.timeout(120)
def test_dask_runner_computes_a_side_input_once(dask_scheduler, tmp_path):
    """rnnflow's DaskRunner runs each step once; Beam 2.77's reran the side input's upstream steps in
    the task that reads it (the reason 1x Penn Treebank did not finish in 4 minutes on Dask)."""
    from pipelines.beam.dask_runner import DaskRunner
    from pipelines.beam.runners import pipeline_options

    address, services = dask_scheduler
    options = pipeline_options(["--runner=dask", f"--dask_client_address={address}"])
    with show_logs_on_failure(services):
        calls, written = _count_upstream_calls(DaskRunner(), options, tmp_path)
    assert written == [x + 15 for x in range(6)]
    assert calls == 6


@pytest.mark.timeout(120)
def test_beams_own_dask_runner_still_gets_side_inputs_wrong(dask_scheduler, tmp_path):
    """The reason for ``pipelines.beam.dask_runner``: Beam 2.77's DaskRunner reruns a side input's
    upstream steps in each task that reads it, and there (several partitions in one process, sharing one
    output list) counts them twice: the sum of 0..5 comes out as 30. When this fails, Beam has fixed
    it, and the subclass's ParDo and side-input handling can go."""
    from apache_beam.runners.dask.dask_runner import DaskRunner

    from pipelines.beam.runners import pipeline_options

    address, services = dask_scheduler
    options = pipeline_options(["--runner=dask", f"--dask_client_address={address}"])
    with show_logs_on_failure(services):
        calls, written = _count_upstream_calls(DaskRunner(), options, tmp_path)
    assert calls > 6 or written != [x + 15 for x in range(6)]


def _written(folder) -> list:
    return sorted(json.loads((folder / name).read_text()) for name in os.listdir(folder))


@pytest.mark.timeout(120)
def test_dask_runner_combines_and_groups_like_the_direct_runner(dask_scheduler, tmp_path):
    """Lifted ``CombinePerKey`` (``Count.PerElement``), ``Count.Globally`` of an empty collection (its
    default), a ``GroupByKey`` and a branch that does not feed the last step (Beam's runner ran only
    the last one) give what the reference runner gives."""
    from pipelines.beam.dask_runner import DaskRunner
    from pipelines.beam.runners import pipeline_options

    def _write_json(x, folder):  # nested: pickled by value for the workers
        import json
        import uuid

        with open(os.path.join(folder, uuid.uuid4().hex), "w") as f:
            json.dump(x, f)

    address, services = dask_scheduler
    words = [w for i in range(40) for w in ["a", "b", "c"][: 1 + i % 3]]
    results = {}
    for name, runner, args in [("direct", local_runner(), []),
                               ("dask", DaskRunner(), ["--runner=dask", f"--dask_client_address={address}",
                                                       "--dask_npartitions=5"])]:
        folders = {key: tmp_path / name / key for key in ("counts", "empty", "groups")}
        for folder in folders.values():
            folder.mkdir(parents=True)
        with show_logs_on_failure(services), beam.Pipeline(runner=runner, options=pipeline_options(args)) as p:
            xs = p | beam.Create(words) | beam.Reshuffle()
            _ = (xs | beam.combiners.Count.PerElement()
                 | "WriteCounts" >> beam.Map(_write_json, str(folders["counts"])))
            _ = (xs | beam.Filter(lambda w: w == "z") | beam.combiners.Count.Globally()
                 | "WriteEmpty" >> beam.Map(_write_json, str(folders["empty"])))
            _ = (xs | "KeyByWord" >> beam.Map(lambda w: (w, w)) | beam.GroupByKey()
                 | "Sizes" >> beam.MapTuple(lambda k, vs: [k, len(list(vs))])
                 | "WriteGroups" >> beam.Map(_write_json, str(folders["groups"])))
        results[name] = {key: _written(folder) for key, folder in folders.items()}
    assert results["dask"] == results["direct"]
    assert results["direct"]["counts"] == [["a", 40], ["b", 26], ["c", 13]]
    assert results["direct"]["empty"] == [0]
    assert results["direct"]["groups"] == results["direct"]["counts"]


@pytest.mark.timeout(60)
def test_dask_runner_refuses_a_windowed_pipeline(dask_scheduler):
    """Elements travel between Dask steps without their windows (Beam's translation grouped a
    ``FixedWindows`` collection as one window): such a pipeline is refused, naming the step."""
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    from pipelines.beam.dask_runner import DaskRunner
    from pipelines.beam.runners import pipeline_options

    address, _ = dask_scheduler
    options = pipeline_options(["--runner=dask", f"--dask_client_address={address}"])
    with pytest.raises(ValueError, match=r"global window only.*'Windows'"):
        with beam.Pipeline(runner=DaskRunner(), options=options) as p:
            _ = (p | beam.Create(list(range(10))) | beam.Map(lambda i: TimestampedValue(("k", i), i))
                 | "Windows" >> beam.WindowInto(FixedWindows(5)) | beam.GroupByKey())


def test_dask_runner_groups_without_windowing_steps_and_lifts_combines():
    """rnnflow's DaskRunner groups with one ``dask.bag.groupby`` (no
    ``ReifyWindows`` wrapping every element) and folds a ``CombinePerKey`` per partition before merging
    (no grouping of every element): the token count of the vocabulary was most of the Dask job's time."""
    from pipelines.beam.dask_runner import _GlobalGroupByKey, _LiftedCombinePerKey, overrides

    p = beam.Pipeline()
    xs = p | beam.Create(["a", "b"])
    _ = xs | beam.combiners.Count.PerElement()
    _ = xs | "Pairs" >> beam.Map(lambda w: (w, 1)) | beam.GroupByKey()
    p.replace_all(overrides())
    leaves = []

    class Leaves(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            leaves.append(node)

    p.visit(Leaves())
    kinds = [type(node.transform) for node in leaves]
    assert kinds.count(_LiftedCombinePerKey) == 1 and kinds.count(_GlobalGroupByKey) == 1
    assert not [node for node in leaves if node.full_label.endswith("ReifyWindows")]


# ----------------------------------------------------------------------- the graph, for Dask
def _tagging_config(root):
    """Tagging with character features (graph only: its encode step adds a character vocabulary)."""
    path = root / "ner.txt"
    path.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n\nBrussels B-LOC\n", encoding="utf-8")
    return DataConfig(dataset="columns", files=[str(path)], tag_scheme="bio", char_features=True,
                      split={"method": "interleave", "valid": 0.2, "test": 0.2, "period": 5})


def _seq2seq_config(root):
    """Source/target pairs (graph only: a target vocabulary of its own)."""
    path = root / "pairs.tsv"
    path.write_text("abc\tc b a\nde\te d\n", encoding="utf-8")
    return DataConfig(dataset="pairs", files=[str(path)], level="char", target={"level": "word"},
                      split={"valid": 0.3, "test": 0.3, "seed": 1})


GRAPHS = [*CORPORA, "tagging", "seq2seq"]


@pytest.fixture
def graph_config(request, corpora, tmp_path):
    name = request.param
    config = corpora[name][0] if name in corpora else {"tagging": _tagging_config,
                                                       "seq2seq": _seq2seq_config}[name](tmp_path)
    return config.model_copy(update={"output_dir": str(tmp_path / "out")})


def _leaves(config: DataConfig, out_dir):
    """The prepare job's pipeline and its leaf transforms (``AppliedPTransform``) in visiting order."""
    p = beam.Pipeline(runner=local_runner())
    prepare.build_pipeline(p, config, datasets.corpus_sources(config), str(out_dir))
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            found.append(node)

    p.visit(Visitor())
    return p, found


def _leaf_pardos(config: DataConfig, out_dir):
    """``(label, ParDo transform, number of outputs)`` of every leaf ParDo of the prepare job's graph."""
    p, leaves = _leaves(config, out_dir)
    return p, [(n.full_label, n.transform, len(n.outputs)) for n in leaves if isinstance(n.transform, beam.ParDo)]


@pytest.mark.parametrize("graph_config", GRAPHS, indirect=True)
def test_the_prepare_graph_has_no_multi_output_pardo(graph_config, tmp_path):
    """Beam 2.77's DaskRunner hands every output of a multi-output ParDo (``with_outputs``,
    ``beam.Partition``) to every consumer: the job must have none (in the runner API proto either)."""
    p, pardos = _leaf_pardos(graph_config, tmp_path)
    assert len(pardos) > 10
    assert [(label, n) for label, _, n in pardos if n != 1] == []
    proto = p.to_runner_api()
    multi = [t.unique_name for t in proto.components.transforms.values()
             if t.spec.urn == "beam:transform:pardo:v1" and len(t.outputs) > 1]
    assert multi == []


@pytest.mark.parametrize("graph_config", GRAPHS, indirect=True)
def test_no_step_of_the_prepare_graph_emits_from_finish_bundle(graph_config, tmp_path):
    """Beam 2.77's DaskRunner collects a partition's outputs before it calls ``finish_bundle``: what a
    DoFn emits there is lost (``beam.BatchElements`` emits its last batch there, ``Top`` its bundle's best)."""
    _, pardos = _leaf_pardos(graph_config, tmp_path)
    emitting = [label for label, transform, _ in pardos
                if type(transform.fn).finish_bundle is not beam.DoFn.finish_bundle]
    assert emitting == []


@pytest.mark.parametrize("graph_config", GRAPHS, indirect=True)
def test_every_file_writer_feeds_the_last_step(graph_config, tmp_path):
    """Beam 2.77's DaskRunner computes only what the last leaf transform needs: ``WriteSummary`` comes
    last, and every step that writes a file (shards, vocabularies, label sets, rejected records) is
    upstream of it, as a main or side input."""
    _, leaves = _leaves(graph_config, tmp_path)
    last = leaves[-1]
    assert last.full_label.startswith("WriteSummary/")
    upstream, todo = set(), [last]
    while todo:
        node = todo.pop()
        for value in [*node.inputs, *(s.pvalue for s in node.side_inputs)]:
            producer = getattr(value, "producer", None)
            if producer is not None and producer not in upstream:
                upstream.add(producer)
                todo.append(producer)
    writers = [n.full_label for n in leaves if any(part.startswith("Write") for part in n.full_label.split("/"))]
    assert len(writers) >= 4
    assert [w for w in writers if w != last.full_label and all(w != n.full_label for n in upstream)] == []
