"""The layer is what was tested: one lock of every package, the one the tests' environment is
installed from; and a poller loads only its own feed's code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata

from local_stack.template import ROOT
from tests.template.test_template import requirement_pins

DEV_LOCK = ROOT / "requirements-dev.txt"


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def test_the_tests_run_on_exactly_the_locked_layer_packages():
    for name, version in requirement_pins().items():
        tested = metadata.version(name)
        assert tested == version, f"the tests run on {name} {tested}, the layer ships {version}"


def test_the_tools_lock_includes_the_layers_and_locks_nothing_twice():
    text = DEV_LOCK.read_text()
    assert "-r layers/relay/requirements.txt" in text.splitlines()
    tools = {_normalised(name) for name in re.findall(r"^([A-Za-z0-9_.-]+)==", text, flags=re.MULTILINE)}
    assert not tools & set(requirement_pins()), "a layer package locked again, maybe at another version"
    for lock in (DEV_LOCK, ROOT / "layers" / "relay" / "requirements.txt"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
        pinned = [entry for entry in entries if "==" in entry.split("\n", 1)[0]]
        assert all("--hash=sha256:" in entry for entry in pinned), f"{lock.name}: a package without a hash"


def test_the_extern_poller_does_not_load_diadocs_code():
    code = (
        "import json, sys; sys.path[:0] = ['layers/relay', 'functions/extern_poller']; import app; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kontur_relay'))))"
    )
    environment = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "1", "EXTERN_API_URL": "http://127.0.0.1:9"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "kontur_relay.feeds.extern.kind" in loaded
    assert not [m for m in loaded if m.startswith("kontur_relay.feeds.diadoc")]
