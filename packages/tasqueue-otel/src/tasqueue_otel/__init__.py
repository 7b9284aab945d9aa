"""tasqueue-otel: OpenTelemetry traces and metrics for tasqueue, trace context carried across the queue.

Installed, it instruments every ``Server`` with the global OpenTelemetry providers; nothing else
to do. For explicit providers (the Go option ``TraceProvider``)::

    from tasqueue import Server
    from tasqueue_otel import OtelPlugin

    srv = Server("redis://127.0.0.1:6379/0", plugins=[OtelPlugin(tracer_provider=tp, meter_provider=mp)])

Each enqueue opens a PRODUCER span ``send <queue>`` and writes its context into the job's
headers; each run opens a CONSUMER span ``process <queue>`` under it, on whichever machine the
worker runs. ``TASQUEUE_DISABLE_PLUGINS=otel`` turns the installed plugin off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasqueue_otel._plugin import OtelPlugin, installed

if TYPE_CHECKING:
    from tasqueue_otel.middleware import OtelMiddleware

__all__ = ["OtelMiddleware", "OtelPlugin", "__version__", "installed"]


def __getattr__(name: str) -> Any:
    # Lazy, so that loading the entry point (tasqueue_otel.plugin) does not import OpenTelemetry.
    if name == "OtelMiddleware":
        from tasqueue_otel.middleware import OtelMiddleware

        return OtelMiddleware
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("tasqueue-otel")
        except PackageNotFoundError:  # running from a source tree without metadata
            found = "0.0.0"
        globals()["__version__"] = found
        return found
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
