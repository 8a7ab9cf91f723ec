"""One run of a job, independent of who hosts it: the result as JSON texts,
or the failure as (retryable, message)."""

from __future__ import annotations

import json
from typing import Any

from . import Context, Fatal, Job, Outcome, Retry, _host
from .http import HttpError


class Failed(Exception):
    def __init__(self, retryable: bool, message: str) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.message = message


def the_job() -> type[Job]:
    if len(_host.exported) != 1:
        names = [j.__name__ for j in _host.exported]
        raise RuntimeError(
            f"a component exports exactly one job with quartzite_sdk.export(); found {names}"
        )
    return _host.exported[0]


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise Failed(False, f"cannot serialize {what}: {e}") from None


def run(job: type[Job], ctx: Context) -> tuple[str | None, str | None]:
    try:
        result = job().run(ctx)
    except Retry as e:
        raise Failed(True, str(e)) from None
    except Fatal as e:
        raise Failed(False, str(e)) from None
    except HttpError as e:  # retryable when a later try may pass, fatal otherwise
        raise Failed(e.retryable, str(e)) from None
    except Exception as e:  # an unexpected error is transient unless the job says otherwise
        raise Failed(True, f"{type(e).__name__}: {e}") from None
    if isinstance(result, Outcome):
        details = None if result.details is None else _to_json(result.details, "details")
        new_data = _to_json(result.new_data, "new job data") if result.has_new_data else None
        return details, new_data
    if result is None:
        return None, None
    return _to_json(result, "details"), None
