"""The runner adapter: the one module that knows Beam's runners (names, how each is made, what each
can report). The prepare job gives it the Beam arguments and gets back options, a runner object, the
runner's name for the manifest, and its counters for the log.

Runner names (``--runner``; short names in any case, ``Runner`` suffix optional)::

    DirectRunner (direct)      Beam's in-process FnApiRunner (see local_runner), the default
    PortableRunner (portable)  a job service (--job_endpoint, or "embed") and SDK workers
                               (--environment_type=EXTERNAL|DOCKER|PROCESS|LOOPBACK)
    FlinkRunner (flink)        --flink_master=host:port (a portable Flink job server)
    SparkRunner (spark)        --spark_master_url=spark://host:port (a portable Spark job server)
    DataflowRunner (dataflow)  Google Cloud Dataflow (--project, --region, --temp_location gs://...)
    PrismRunner (prism)        Beam's Go runner (downloads its binary at run time)
    DaskRunner (dask)          Beam's DaskRunner on a Dask cluster, with side inputs computed once and
                               real partitions (pipelines.beam.dask_runner; --dask_client_address
                               tcp://host:8786, --dask_npartitions N; needs ``rnnflow[dask]``)

Any other runner Beam knows by name, and the fully qualified class name of a ``PipelineRunner``
subclass, are passed to Beam as given; anything else is a :class:`RunnerError` naming ``--runner``
and the choices.

The output of the prepare job never depends on the runner: every count the manifest records comes
from the pipeline's own summary file, never from runner metrics, which only some runners report
(:func:`log_counters` logs them where they exist; the DaskRunner has none).
"""

from __future__ import annotations

import logging
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from apache_beam.options.pipeline_options import PipelineOptions

log = logging.getLogger(__name__)

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
DEFAULT_RUNNER = "DirectRunner"
# the runners named here: option value (what Beam gets) by display name
RUNNERS = {
    "DirectRunner": "DirectRunner",
    "PortableRunner": "PortableRunner",
    "FlinkRunner": "FlinkRunner",
    "SparkRunner": "SparkRunner",
    "DataflowRunner": "DataflowRunner",
    "PrismRunner": "PrismRunner",
    "DaskRunner": DASK_RUNNER,
}
# names that mean "run locally, in this process" (Beam's local runners, which would try Prism first)
DIRECT_RUNNER_NAMES = ("directrunner", "direct", "switchingdirectrunner", "fnapirunner")
_DIRECT_PATHS = ("apache_beam.runners.direct.direct_runner.DirectRunner",
                 "apache_beam.runners.direct.direct_runner.SwitchingDirectRunner",
                 "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
                 "apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner")


class RunnerError(ValueError):
    """A ``--runner`` that cannot be used: an unknown name, or a runner whose packages are missing."""


def _beam_known() -> dict[str, str]:
    """Beam's own runner names (lowercase) → the name as Beam spells it."""
    from apache_beam.options.pipeline_options import StandardOptions

    return {name.lower(): name for name in StandardOptions.KNOWN_RUNNER_NAMES}


def _aliases() -> dict[str, str]:
    """Every accepted spelling (lowercase) → display name."""
    out = {name.lower(): name for name in _beam_known().values()}
    for name, value in RUNNERS.items():
        for alias in (name, name[: -len("Runner")], value):
            out[alias.lower()] = name
    for alias in DIRECT_RUNNER_NAMES + _DIRECT_PATHS:
        out[alias.lower()] = "DirectRunner"
    return out


def main_runners() -> list[str]:
    """The runners named here, with their short forms: ``DaskRunner (dask)``, ... (imports no Beam module)."""
    return [f"{name} ({name[: -len('Runner')].lower()})" for name in RUNNERS]


def runners_help(width: int = 70) -> str:
    """:func:`main_runners` as lines of at most ``width`` characters (the CLI's ``--help``)."""
    return "\n".join(textwrap.wrap(", ".join(main_runners()), width))


def runner_choices() -> list[str]:
    """The runner names for messages: ours (with short forms), then Beam's others."""
    ours = main_runners()
    others = sorted(name for name in set(_beam_known().values()) - set(RUNNERS)
                    if name not in ("SwitchingDirectRunner", "FnApiRunner") and not name.startswith("Test"))
    return ours + others


def resolve_runner(name: str) -> str:
    """The display name of runner ``name`` (any case, short or long, or a fully qualified class name):
    ``"dask"`` → ``"DaskRunner"``; a class path Beam does not know is returned as given.

    Raises:
        RunnerError: ``name`` is none of them.
    """
    if not isinstance(name, str) or not name.strip():
        raise RunnerError(f"--runner must name a runner, got {name!r}; choose one of: {', '.join(runner_choices())}")
    name = name.strip()
    found = _aliases().get(name.lower())
    if found is not None:
        return found
    if "." in name:  # a PipelineRunner subclass of the user's: Beam imports it
        return name
    raise RunnerError(
        f"--runner {name!r} is not a runner; choose one of: {', '.join(runner_choices())}, or the fully "
        "qualified class name of a PipelineRunner (e.g. --runner DaskRunner --dask_client_address tcp://HOST:8786)"
    )


def _option_value(display: str) -> str:
    return RUNNERS.get(display, display)


def pipeline_options(beam_args: list[str] | None) -> PipelineOptions:
    """Beam options from ``beam_args``, ``--runner`` resolved (:func:`resolve_runner`; default
    ``DirectRunner``, with ``--direct_running_mode=in_memory`` unless given).

    Raises:
        RunnerError: an unknown ``--runner``.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(list(beam_args or []))
    standard = options.view_as(StandardOptions)
    runner = standard.runner
    if isinstance(runner, str) or runner is None:
        standard.runner = _option_value(resolve_runner(runner or DEFAULT_RUNNER))
    direct = options.view_as(DirectOptions)
    if not direct.direct_running_mode:
        direct.direct_running_mode = "in_memory"
    return options


def runner_name(options: PipelineOptions) -> str:
    """The runner's display name (``DirectRunner``, ``DaskRunner``, ...), as the manifest records it."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    if not isinstance(runner, str):
        return type(runner).__name__
    return resolve_runner(runner)


def _check_dask() -> None:
    try:
        import dask.bag  # noqa: F401 - what Beam's DaskRunner needs
        import distributed  # noqa: F401
    except ImportError as err:
        raise RunnerError(
            f"--runner DaskRunner needs dask and distributed ({err}); install them with "
            "pip install 'rnnflow[dask]' on this machine and on every Dask worker"
        ) from err


def make_runner(options: PipelineOptions):
    """The runner object for ``options`` (from :func:`pipeline_options`): ``DirectRunner`` →
    :func:`local_runner` (Beam's in-process FnApiRunner, no Prism download); the others as Beam makes
    them from their name, but DaskRunner → :class:`pipelines.beam.dask_runner.DaskRunner` (Beam's, made
    usable on a real corpus).

    Raises:
        RunnerError: the runner's packages are missing (DaskRunner without ``rnnflow[dask]``).
    """
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.runner import create_runner

    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    if not isinstance(runner, str):
        return runner
    name = resolve_runner(runner)
    if name == "DirectRunner":
        return local_runner(options)
    if name == "DaskRunner":
        _check_dask()
        from pipelines.beam.dask_runner import DaskRunner

        return DaskRunner()
    return create_runner(_option_value(name))


def log_counters(result, namespace: str, logger: logging.Logger = log) -> None:
    """Logs the counters of ``namespace`` that ``result`` (a finished ``PipelineResult``) reports, where
    its runner reports metrics at all (DaskRunner: not; a portable job service: maybe none)."""
    try:
        from apache_beam.metrics import MetricsFilter

        counters = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    except Exception as err:  # noqa: BLE001 - NotImplementedError (Dask), unsupported queries, a closed job service
        logger.info("  (the runner reports no metrics: %s)", f"{type(err).__name__}: {err}"[:200])
        return
    if not counters:
        logger.info("  (the runner reported no counters)")
    for c in sorted(counters, key=lambda c: c.key.metric.name):
        value = c.committed if c.committed is not None else c.attempted
        logger.info("  %s = %s", c.key.metric.name, value)


def local_runner(options=None):
    """Beam's in-process ``FnApiRunner``: what ``DirectRunner`` runs batch pipelines on.

    Beam 2.77's ``DirectRunner`` first tries the ``PrismRunner``, which downloads a binary from
    GitHub at run time; this project never downloads anything at run time, so local runs (and the
    tests' ``TestPipeline``) use the ``FnApiRunner`` directly. It honours ``--direct_num_workers`` and
    ``--direct_running_mode`` (``in_memory``, ``multi_threading``, ``multi_processing``).
    """
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    if options is None:
        return fn_runner.FnApiRunner()
    try:  # hand the pipeline options to the SDK workers, as DirectRunner does
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info)
    except Exception:  # noqa: BLE001 - internal API; the plain runner works too
        return fn_runner.FnApiRunner()
