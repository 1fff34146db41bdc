"""The runner adapter (:mod:`pipelines.beam.runners`): names, options, runner objects, metrics where a
runner has them, and the errors a user sees for a runner that cannot be used."""

import logging
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from pipelines import cli
from pipelines.beam import runners
from pipelines.beam.runners import DASK_RUNNER, RunnerError


@pytest.mark.parametrize("name, display, value", [
    ("DaskRunner", "DaskRunner", DASK_RUNNER),
    ("dask", "DaskRunner", DASK_RUNNER),
    ("DASK", "DaskRunner", DASK_RUNNER),
    ("daskrunner", "DaskRunner", DASK_RUNNER),
    (DASK_RUNNER, "DaskRunner", DASK_RUNNER),
    ("direct", "DirectRunner", "DirectRunner"),
    ("DirectRunner", "DirectRunner", "DirectRunner"),
    ("FnApiRunner", "DirectRunner", "DirectRunner"),
    ("portable", "PortableRunner", "PortableRunner"),
    ("FlinkRunner", "FlinkRunner", "FlinkRunner"),
    ("spark", "SparkRunner", "SparkRunner"),
    ("DataflowRunner", "DataflowRunner", "DataflowRunner"),
    ("prism", "PrismRunner", "PrismRunner"),
    ("BundleBasedDirectRunner", "BundleBasedDirectRunner", "BundleBasedDirectRunner"),  # Beam's own name
    ("my_package.runners.MyRunner", "my_package.runners.MyRunner", "my_package.runners.MyRunner"),
])
def test_runner_names_resolve(name, display, value):
    assert runners.resolve_runner(name) == display
    options = runners.pipeline_options([f"--runner={name}"])
    assert options.view_as(StandardOptions).runner == value
    assert runners.runner_name(options) == display


def test_default_is_the_in_process_direct_runner():
    options = runners.pipeline_options(None)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert runners.runner_name(options) == "DirectRunner"
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    assert isinstance(runners.make_runner(options), FnApiRunner)


def test_an_unknown_runner_names_the_option_and_the_choices():
    with pytest.raises(RunnerError) as err:
        runners.pipeline_options(["--runner", "Dsak"])
    message = str(err.value)
    assert "--runner 'Dsak' is not a runner" in message
    for choice in ("DirectRunner (direct)", "DaskRunner (dask)", "PortableRunner (portable)", "FlinkRunner (flink)",
                   "SparkRunner (spark)", "DataflowRunner (dataflow)", "PrismRunner (prism)"):
        assert choice in message
    assert "fully qualified class name" in message
    assert isinstance(err.value, ValueError)  # the CLI reports it as a failure, with its message


def test_the_dask_runner_is_built_with_its_options():
    from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner

    options = runners.pipeline_options(["--runner", "DaskRunner", "--dask_client_address", "tcp://127.0.0.1:1"])
    assert isinstance(runners.make_runner(options), DaskRunner)
    assert options.view_as(DaskOptions).address == "tcp://127.0.0.1:1"


def test_the_dask_runner_without_distributed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # what an environment without it looks like
    options = runners.pipeline_options(["--runner=dask"])
    with pytest.raises(RunnerError, match=r"pip install 'rnnflow\[dask\]'"):
        runners.make_runner(options)


class _NoMetrics:
    def metrics(self):
        raise NotImplementedError("collecting metrics will come later!")  # Beam 2.77's DaskRunnerResult


def test_log_counters_of_a_runner_without_metrics_logs_that_and_goes_on(caplog):
    logger = logging.getLogger("test_runners")
    with caplog.at_level(logging.INFO, logger="test_runners"):
        runners.log_counters(_NoMetrics(), "rnnflow", logger)
    assert "reports no metrics: NotImplementedError" in caplog.text


def test_log_counters_logs_the_namespace_counters_of_a_finished_job(caplog):
    def count(x):
        beam.metrics.Metrics.counter("ns_under_test", "seen").inc()
        beam.metrics.Metrics.counter("another_ns", "ignored").inc()
        return x

    p = beam.Pipeline(runner=runners.local_runner())
    _ = p | beam.Create([1, 2, 3]) | beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    logger = logging.getLogger("test_runners")
    with caplog.at_level(logging.INFO, logger="test_runners"):
        runners.log_counters(result, "ns_under_test", logger)
    assert "seen = 3" in caplog.text and "ignored" not in caplog.text


def _config_file(tmp_path):
    (tmp_path / "c.txt").write_text("a b\nc d\n")
    path = tmp_path / "c.yaml"
    path.write_text(f"name: c\ndata: {{dataset: text, files: ['{tmp_path / 'c.txt'}'], output_dir: '{tmp_path}/out'}}\n")
    return str(path)


def test_the_cli_reports_an_unknown_runner_before_running_anything(tmp_path, capsys):
    assert cli.main(["prepare", _config_file(tmp_path), "--runner", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "--runner 'nosuch' is not a runner" in err and "DaskRunner (dask)" in err
    assert not (tmp_path / "out").exists()


def test_the_cli_passes_runner_options_to_the_prepare_job(tmp_path, monkeypatch, capsys):
    from pipelines import prepare

    seen = {}

    def fake_prepare(data, beam_args=None, force=False):
        seen["args"] = beam_args
        return tmp_path / "done"

    monkeypatch.setattr(prepare, "prepare", fake_prepare)
    args = ["--runner", "DaskRunner", "--dask_client_address", "tcp://127.0.0.1:8786"]
    assert cli.main(["prepare", _config_file(tmp_path), *args]) == 0
    assert seen["args"] == args
    assert capsys.readouterr().out.strip() == str(tmp_path / "done")


def test_prepare_help_explains_the_runners_with_examples(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["prepare", "--help"])
    text = capsys.readouterr().out
    for runner in runners.RUNNERS:
        assert runner in text
    assert "rnnflow prepare configs/ptb_small.yaml --runner DaskRunner --dask_client_address tcp://" in text
    assert "pip install 'rnnflow[dask]'" in text
    assert "--environment_type EXTERNAL" in text and "--runner DataflowRunner" in text
