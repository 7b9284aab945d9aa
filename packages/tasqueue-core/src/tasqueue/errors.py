"""Exceptions raised by tasqueue and its backends.

The hierarchy::

    TasqueueError
    ├── ConfigurationError            a Server or backend was set up wrongly
    │   ├── UnknownSchemeError        no installed plugin handles a URL's scheme
    │   └── PluginConflictError       two plugins claim one URL scheme
    ├── BrokerError                   the broker failed (connection lost, command refused)
    │   └── EnqueueError              an enqueue failed part-way: says which jobs were published
    ├── ResultsError                  the results store failed
    ├── NotFoundError                 no such job, result, group, chain or schedule (also a KeyError)
    ├── JobFailedError                a job you waited for failed (``Server.result``); carries its error
    └── JobError                      raised inside a worker about one run; stored as the job's ``prev_err``
        ├── JobTimeoutError           the handler ran past ``JobOpts.timeout`` (also a TimeoutError)
        ├── JobCancelledError         a cancelled run tried to save a result
        ├── PayloadError              a typed task's payload does not fit its type (never retried)
        └── UnknownTaskError          no handler is registered for the job's task

    ConfigurationWarning (a UserWarning)  a setup that works, but probably not as meant

Plugins wrap their client's exceptions in ``BrokerError`` / ``ResultsError`` with
``raise ... from exc`` so that callers can catch one type whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BrokerError",
    "ConfigurationError",
    "ConfigurationWarning",
    "EnqueueError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "PayloadError",
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


class ConfigurationWarning(UserWarning):
    """A Server was configured in a way that works, but probably not as meant.

    Filter it by category when the setup is deliberate: ``warnings.simplefilter("ignore", ConfigurationWarning)``.
    """


class UnknownSchemeError(ConfigurationError):
    """No installed plugin registered the scheme of a broker or results URL."""


class PluginConflictError(ConfigurationError):
    """Two plugins registered a factory for the same URL scheme."""


class BrokerError(TasqueueError):
    """The broker could not do what was asked (connection lost, command refused)."""


class EnqueueError(BrokerError):
    """An enqueue that failed part-way: some jobs were published, and a caller who simply tries
    again would run those twice.

    Attributes:
        enqueued: Ids the broker holds: these jobs will run, and their records stay.
        unknown: Ids whose publish got no answer (a lost reply): they may run. Their records
            stay, saying ``queued``, so that enqueueing them again under the same ids
            (``JobOpts(id=...)``) publishes the ones that are missing and runs none twice.
        not_enqueued: Ids that were not published; their records were removed.

    A broker raises it from ``enqueue`` about its own call; any other error from a broker's
    ``enqueue`` means none of that call's messages were published.
    """

    def __init__(
        self,
        message: str,
        *,
        enqueued: Sequence[str] = (),
        unknown: Sequence[str] = (),
        not_enqueued: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.enqueued = tuple(enqueued)
        self.unknown = tuple(unknown)
        self.not_enqueued = tuple(not_enqueued)


class ResultsError(TasqueueError):
    """The results store could not do what was asked."""


class NotFoundError(TasqueueError, KeyError):
    """No job, result, group, chain or schedule is stored under the id that was asked for."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument as if it were a bare key; show the sentence instead.
        return str(self.args[0]) if self.args else ""


class JobFailedError(TasqueueError):
    """A job that was waited for (``Server.result``, ``TaskHandle.result``) failed for good.

    Attributes:
        job_id: The job's id.
        error_type: The name of the exception that failed it (``"ValueError"``, ``"JobTimeoutError"``).
        error: That exception's message.
        traceback: The traceback the worker captured, as text (``""`` when there was none, e.g.
            an unknown task or a job whose workers kept dying).
    """

    def __init__(self, job_id: str, error_type: str, error: str, traceback: str = "") -> None:
        super().__init__(job_id, error_type, error, traceback)
        self.job_id = job_id
        self.error_type = error_type
        self.error = error
        self.traceback = traceback

    def __str__(self) -> str:
        text = f"job {self.job_id!r} failed: {self.error_type}: {self.error}"
        if self.traceback:
            text += f"\n\nTraceback in the worker:\n{self.traceback.rstrip()}"
        return text


class JobError(TasqueueError):
    """Something about one run of a job; its text becomes the job's ``prev_err``."""


class JobTimeoutError(JobError, TimeoutError):
    """The handler did not finish within the job's timeout and was cancelled."""


class JobCancelledError(JobError):
    """The run was cancelled (timeout, shutdown, lost lease): it may save no result any more."""


class PayloadError(JobError):
    """A typed task's payload could not be decoded into its declared type.

    Raised by ``TaskHandle.enqueue`` before anything is sent, and inside a worker for a payload
    that arrived broken (an old producer, a hand-written message): the job then fails at once,
    without retries, since running it again cannot fix its bytes.
    """


class UnknownTaskError(JobError):
    """The job names a task that this worker has no handler for."""
