"""Runner glue: which runner names mean "run locally", and the in-process ``FnApiRunner`` they run on."""

DIRECT_RUNNER_NAMES = ("directrunner", "direct", "switchingdirectrunner", "fnapirunner")


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
