"""Prometheus metrics, served on Synapse's own metrics listener (`enable_metrics: true`).

Synapse keeps every metric in prometheus_client's global registry and labels each with the
homeserver's name, so these are defined once per process and labelled the same way.
"""

from prometheus_client import Counter, Gauge, Histogram

# From 5 µs to 1 s: the hot-path target is 100 µs a callback (DESIGN §8).
_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)

CALLBACK_SECONDS = Histogram(
    "synapse_compliance_callback_seconds",
    "Time spent in the module's Synapse callbacks",
    ["server_name", "callback"],
    buckets=_BUCKETS,
)

REFUSALS = Counter(
    "synapse_compliance_refusals_total",
    "Requests the module refused, by reason code",
    ["server_name", "reason"],
)

# Set by the archiver-lag check (startup_checks.py) every 30 s on the instance that runs background
# tasks, and whenever `GET admin/status` is read.
ARCHIVE_LAG_EVENTS = Gauge(
    "synapse_compliance_archive_lag_events",
    "Stream positions persisted but not yet read by the archiver",
    ["server_name"],
)
ARCHIVE_LAG_SECONDS = Gauge(
    "synapse_compliance_archive_lag_seconds",
    "Age of the oldest persisted event the archiver has not reached yet (0 when caught up)",
    ["server_name"],
)
