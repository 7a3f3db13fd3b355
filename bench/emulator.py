"""The local AWS emulator for the benchmarks: moto's server, as the sandbox runs it, except that
CloudWatch keeps no datapoint of the controller's own custom metrics.

moto answers GetMetricData by scanning every datapoint it holds, once per query and period: the
`ServiceDesiredCount`/`ServiceStatus` datapoints the controller (and the baseline) publish every
pass, 2 per service, would make the emulator, not the controller, the cost of a pass at 10,000
services. Those calls are still made, sent over HTTP, parsed and answered; only their datapoints
are not kept (nothing reads them back).

    python bench/emulator.py STARTER_PID [moto.server options]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOT_KEPT_NAMESPACE = "InfraControllerBench"  # the namespace the benchmarks publish to


def _patch_cloudwatch() -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    keep = CloudWatchBackend.put_metric_data

    def put_metric_data(self: Any, namespace: str, metric_data: list[dict[str, Any]]) -> None:
        if namespace != NOT_KEPT_NAMESPACE:
            keep(self, namespace, metric_data)

    CloudWatchBackend.put_metric_data = put_metric_data  # type: ignore[method-assign]


def _keep_connections_alive() -> None:
    """HTTP/1.1, as AWS answers: a connection serves many requests (werkzeug's development
    server answers HTTP/1.0 and closes each one, a TCP handshake per call for both sides)."""
    from werkzeug.serving import WSGIRequestHandler

    WSGIRequestHandler.protocol_version = "HTTP/1.1"


if __name__ == "__main__":
    _patch_cloudwatch()
    _keep_connections_alive()
    from controller.sandbox.moto_process import main

    main()
