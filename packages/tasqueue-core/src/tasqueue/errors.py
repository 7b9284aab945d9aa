"""Exceptions raised by tasqueue and its backends.

The hierarchy::

    TasqueueError
    ├── ConfigurationError            a Server or backend was set up wrongly
    │   ├── UnknownSchemeError        no installed plugin handles a URL's scheme
    │   └── PluginConflictError       two plugins claim one URL scheme
    ├── BrokerError                   the broker failed (connection lost, command refused)
    ├── ResultsError                  the results store failed
    ├── NotFoundError                 no such job, result, group, chain or schedule (also a KeyError)
    └── JobError                      raised inside a worker about one run; stored as the job's ``prev_err``
        ├── JobTimeoutError           the handler ran past ``JobOpts.timeout`` (also a TimeoutError)
        ├── JobCancelledError         a cancelled run tried to save a result
        └── UnknownTaskError          no handler is registered for the job's task

Plugins wrap their client's exceptions in ``BrokerError`` / ``ResultsError`` with
``raise ... from exc`` so that callers can catch one type whatever the backend.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "JobCancelledError",
    "JobError",
    "JobTimeoutError",
    "NotFoundError",
    "PluginConflictError",
    "ResultsError",
    "TasqueueError",
    "UnknownSchemeError",
    "UnknownTaskError",
]


class TasqueueError(Exception):
    """Base class of every exception tasqueue raises on purpose."""


class ConfigurationError(TasqueueError):
    """A Server, URL or plugin was configured in a way that cannot work."""


class UnknownSchemeError(ConfigurationError):
    """No installed plugin registered the scheme of a broker or results URL."""


class PluginConflictError(ConfigurationError):
    """Two plugins registered a factory for the same URL scheme."""


class BrokerError(TasqueueError):
    """The broker could not do what was asked (connection lost, command refused)."""


class ResultsError(TasqueueError):
    """The results store could not do what was asked."""


class NotFoundError(TasqueueError, KeyError):
    """No job, result, group, chain or schedule is stored under the id that was asked for."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument as if it were a bare key; show the sentence instead.
        return str(self.args[0]) if self.args else ""


class JobError(TasqueueError):
    """Something about one run of a job; its text becomes the job's ``prev_err``."""


class JobTimeoutError(JobError, TimeoutError):
    """The handler did not finish within the job's timeout and was cancelled."""


class JobCancelledError(JobError):
    """The run was cancelled (timeout, shutdown, lost lease): it may save no result any more."""


class UnknownTaskError(JobError):
    """The job names a task that this worker has no handler for."""
