"""The ``context`` a handler gets from Lambda, for the local stack's workers, the local API
Gateway's in-process invocations and the tests. Standard library only (see ``constants``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from local_stack.constants import function_arn


class LocalContext:
    """The attributes Powertools and the handlers read.

    The remaining time counts down from ``timeout`` seconds; ``seconds_left`` scripts it instead,
    one answer per call of ``get_remaining_time_in_millis`` and the last repeating, for a test that
    needs a run to run out of time at a given step without waiting for it.
    """

    def __init__(
        self,
        function_name: str,
        timeout: float = 300.0,
        *,
        seconds_left: Sequence[float] = (),
        arn: str | None = None,
        memory_mb: int = 256,
        request_id: str | None = None,
        log_stream_name: str = "local",
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn or function_arn(function_name)
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout
        self._script = list(seconds_left)

    def get_remaining_time_in_millis(self) -> int:
        if self._script:
            seconds = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        else:
            seconds = self._deadline - time.monotonic()
        return max(0, int(seconds * 1000))
