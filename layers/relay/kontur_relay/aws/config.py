"""How every AWS client of the layer is configured."""

from __future__ import annotations

from botocore.config import Config

#: boto3's own retries for throttling and transient AWS errors, with bounded waits.
AWS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)
