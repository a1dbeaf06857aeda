"""Khronos' glTF-Validator (the npm package ``gltf-validator``, run with node) on the files the tests
write: a checker we did not write. It lives in ~/.cache/handssca/node (.ci/run installs it there);
where it is missing and npm is here, it is installed once. Without node or the validator the tests
that need it skip, unless HANDSSCA_REQUIRE_NODE=1 (as in CI) makes that a failure."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PREFIX = Path.home() / ".cache" / "handssca" / "node"
PACKAGE = PREFIX / "node_modules" / "gltf-validator"
# Every file named on the command line -> one JSON line a file: the validator's issues.
SCRIPT = """
const fs = require('fs');
const validator = require(process.argv[1]);
(async () => {
  for (const path of process.argv.slice(2)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(path)), {maxIssues: 0});
    console.log(JSON.stringify(report.issues));
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


def _unavailable(why: str):
    if os.environ.get("HANDSSCA_REQUIRE_NODE") == "1":
        pytest.fail(f"glTF-Validator is required (HANDSSCA_REQUIRE_NODE=1): {why}")
    pytest.skip(why)


def find_validator():
    """A function validating .glb files (-> the validator's issues per file), installing the
    validator first where it is missing; skips or fails (HANDSSCA_REQUIRE_NODE=1) without it."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed")
    if not PACKAGE.is_dir():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable(f"npm is not installed to install gltf-validator into {PREFIX}")
        PREFIX.mkdir(parents=True, exist_ok=True)
        with open(PREFIX / ".install.lock", "w") as lock:  # test workers install it once
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not PACKAGE.is_dir():
                command = [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PREFIX)]
                try:
                    subprocess.run([*command, "gltf-validator"], capture_output=True, timeout=300, check=False)
                except subprocess.TimeoutExpired:
                    pass
        if not PACKAGE.is_dir():
            _unavailable(f"gltf-validator could not be installed into {PREFIX} (npm registry unreachable?)")

    def validate(*paths) -> list[dict]:
        result = subprocess.run(
            [node, "-e", SCRIPT, str(PACKAGE), *map(str, paths)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    return validate
