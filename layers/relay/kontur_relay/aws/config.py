"""How every AWS client of the layer is configured."""

from __future__ import annotations

from botocore.config import Config
from botocore.useragent import UserAgentString

#: botocore's own User-Agent header, built once. Left to itself botocore builds it twice a call
#: from a dozen parts, a sixth of a PublishBatch's CPU; what it would add per call (which of
#: its features the call used) is telemetry for AWS, not something a request needs.
USER_AGENT = f"{UserAgentString.from_environment().to_string()} app/kontur-feed-relay"

#: boto3's own retries for throttling and transient AWS errors, with bounded waits.
AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15, user_agent=USER_AGENT
)
