"""``make bench``: the relay measured against the limit its inputs set.

The Extern feed is served over HTTP by the simulator, every round trip held back as a real one
would be (Kontur 50 ms a page, SNS 20 ms a call, DynamoDB 10 ms a call); the relay is compared in
the same run with reading alone (the practical limit: pages back to back, nothing else) and with a
naive poller (one Publish and one cursor write per event), on this machine's cores, on one core, and
at the CPU share of a Lambda memory size. ``python -m benchmarks --help`` lists the knobs.

Not collected by pytest (``tests/`` is its ``testpaths``); ``tests/test_bench_smoke.py`` runs it tiny.
"""
