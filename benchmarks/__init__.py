"""``make bench``: the relay measured against the limit its inputs set.

The Extern feed is served over HTTP by the simulator, every round trip held back as a real one
would be (Kontur 50 ms a page, SNS 20 ms a call, DynamoDB 10 ms a call); the relay is compared in
the same run with reading alone (the practical limit: pages back to back, nothing else) and with a
naive poller (one Publish and one cursor write per event), on this machine's cores, on one core, and
at the CPU share of a Lambda memory size. ``python -m benchmarks --help`` lists the knobs.

Not collected by pytest (``tests/`` is its ``testpaths``); ``tests/test_bench_smoke.py`` runs it tiny.
"""

import os
import sys
from pathlib import Path

# The layer is /opt/python in Lambda; here it is imported from the repository, as pytest does.
_LAYER = str(Path(__file__).resolve().parent.parent / "layers" / "relay")
if _LAYER not in sys.path:
    sys.path.insert(0, _LAYER)
# Before Powertools builds its singletons: no X-Ray daemon here, and a run's info lines are noise.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayBench")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay-bench")
