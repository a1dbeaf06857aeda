"""Triton Inference Server, started and stopped from Python, in an environment of its own.

PyPI's nvidia-pytriton bundles a ``tritonserver`` binary with the python backend, and pins
numpy below 2, which the main install (torch, OpenCV 5) cannot take. So the server gets its own
virtual environment (``setup_server_environment``, ``handssca serve setup``): nvidia-pytriton,
the runtime's dependencies, and this very package without its extras, which is what the
repository's python models import. ``TritonServer`` runs that binary (or a system one, as in
NVIDIA's tritonserver container) on a model repository:

    with TritonServer("repo") as server:        # ready when this returns
        client = HandMeshClient(server.grpc_url)
    # on the way out: the ensembles drained, then SIGTERM; Triton exits 0, or this raises
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from handssca import __version__
from handssca.errors import MissingBackend, ServingError

SERVER_PACKAGES = ("nvidia-pytriton==0.7.0", "numpy<2", "onnx", "onnxruntime", "onnxruntime-extensions", "polygraphy")
ENV_VARIABLE = "HANDSSCA_TRITON_ENV"
ENV_MARKER = "handssca_server_env.json"
SYSTEM_BACKENDS = Path("/opt/tritonserver/backends")  # NVIDIA's tritonserver container
STUB_TIMEOUT_S = 10
MAX_RESTARTS = 5  # reloads of one model whose python step died, per server
ADMIN_HEADER = "handssca-admin"  # the header Triton's repository API wants (its value is per server)


def default_environment() -> Path:
    """$HANDSSCA_TRITON_ENV, else ~/.cache/handssca/triton-server."""
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "handssca" / "triton-server"


def _handssca_source() -> list[str]:
    """pip's arguments for this package in the server's environment: a checkout installed in
    editable mode is installed the same way (the server then runs the code being edited), another
    install from a folder from that folder, and anything else as the same release from the index."""
    for dist in metadata.distributions(name="handssca"):  # an egg-info in a source tree has no direct_url
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        url = direct.get("url", "")
        if url.startswith("file://") and (Path(url[7:]) / "pyproject.toml").is_file():
            return ["-e", url[7:]] if direct.get("dir_info", {}).get("editable") else [url[7:]]
    return [f"handssca=={__version__}"]


@dataclass
class ServerEnvironment:
    """Where tritonserver, its backends and the python it runs models with are."""

    folder: Path | None
    binary: Path
    backends: Path
    library_path: list[Path]
    bin_path: list[Path]

    @classmethod
    def find(cls, folder: str | Path | None = None) -> ServerEnvironment:
        """The environment ``setup_server_environment`` made in ``folder`` (default
        ``default_environment()``); without one, a ``tritonserver`` on PATH with the container's
        backends. ServingError saying how to make one otherwise."""
        chosen = Path(folder) if folder else default_environment()
        marker = chosen / ENV_MARKER
        if marker.is_file():
            try:
                site = Path(json.loads(marker.read_text())["site_packages"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ServingError(f"{marker}: damaged ({exc}); make it again: handssca serve setup {chosen}") from exc
            server = site / "pytriton" / "tritonserver"
            return cls(chosen, server / "bin" / "tritonserver", chosen / "backends", [site / "nvidia_pytriton.libs"],
                       [chosen / "bin"])  # fmt: skip
        system = shutil.which("tritonserver")
        if folder is None and system and SYSTEM_BACKENDS.is_dir():
            return cls(None, Path(system), SYSTEM_BACKENDS, [], [])
        raise MissingBackend(
            f"{chosen}: no Triton server environment here: make one with 'handssca serve setup {chosen}' "
            f"(or set {ENV_VARIABLE}; in NVIDIA's tritonserver container the system server is used)"
        )


def setup_server_environment(folder: str | Path | None = None, *, quiet: bool = False) -> ServerEnvironment:
    """A virtual environment in ``folder`` with Triton (nvidia-pytriton), the runtime's
    dependencies and this package, plus the python backend folder Triton is pointed at (the
    wheel keeps the backend and its stub apart; the stub for this Python goes beside it)."""
    folder = Path(folder) if folder else default_environment()
    underway = folder / f".{ENV_MARKER}.partial"  # a setup that stopped half way is redone, not refused
    ours = (folder / ENV_MARKER).is_file() or underway.is_file()
    if folder.is_file() or (folder.is_dir() and not ours and any(folder.iterdir())):
        raise ServingError(f"{folder}: not empty and not a server environment; choose another folder")
    pip_quiet = ["--quiet"] if quiet else []
    from handssca.progress import say

    say(f"serve setup: making Triton's environment in {folder} (about 500 MB; minutes, mostly pip) ...")

    def run(command: list[str]) -> None:
        if not quiet:
            print("$ " + " ".join(command), flush=True)
        result = subprocess.run(
            command, stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE, text=True
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
            raise ServingError(
                f"{folder}: '{' '.join(command[:4])} ...' failed: {lines[-1] if lines else result.returncode}"
            )

    try:
        folder.mkdir(parents=True, exist_ok=True)
        underway.touch()
        (folder / ENV_MARKER).unlink(missing_ok=True)  # half-made until the end
    except OSError as exc:
        raise ServingError(f"{folder}: cannot write it ({exc.strerror or exc})") from exc
    run([sys.executable, "-m", "venv", str(folder)])
    python = str(folder / "bin" / "python")
    run([python, "-m", "pip", "install", *pip_quiet, "--upgrade", "pip"])
    run([python, "-m", "pip", "install", *pip_quiet, *SERVER_PACKAGES])
    run([python, "-m", "pip", "install", *pip_quiet, "--no-deps", *_handssca_source()])
    where = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True)  # fmt: skip
    if where.returncode != 0:
        raise ServingError(f"{folder}: its python does not run ({where.stderr.strip().splitlines()[-1:]})")
    site = where.stdout.strip()
    server = Path(site) / "pytriton" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServingError(f"{stub}: nvidia-pytriton has no python backend stub for Python {version}")
    backends = folder / "backends"
    try:
        shutil.rmtree(backends, ignore_errors=True)
        shutil.copytree(server / "backends", backends)
        shutil.copy2(stub, backends / "python" / stub.name)
    except OSError as exc:
        raise ServingError(f"{backends}: cannot write it ({exc.strerror or exc})") from exc
    info = {
        "site_packages": site,
        "python": version,
        "packages": list(SERVER_PACKAGES),
        "handssca": " ".join(_handssca_source()),
    }
    (folder / ENV_MARKER).write_text(json.dumps(info, indent=2))
    underway.unlink()
    return ServerEnvironment.find(folder)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on localhost (all held open while they are chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


LOOPBACK = "127.0.0.1"
NO_AUTHENTICATION = (
    "Triton's inference endpoints have no authentication: anyone who can reach {host} can run the models"
)


class TritonServer:
    """``with TritonServer(repository) as server:`` a running Triton, listening on ``host``
    (HTTP, gRPC and metrics; loopback unless asked: Triton's inference has no authentication).

    Entering checks the repository, starts tritonserver and waits until its HTTP health endpoint
    says ready (ServingError with the server's own last words if it exits or times out first).
    Leaving sends SIGTERM, as a process manager would, and waits for Triton to unload its models
    and exit; ``exit_code`` is what it returned, and an unclean stop raises. Engines get the
    repository's plugin library through the TensorRT backend's ``plugins`` setting."""

    def __init__(
        self,
        repository: str | Path,
        *,
        environment: ServerEnvironment | str | Path | None = None,
        host: str = LOOPBACK,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log: str | Path | None = None,
        start_timeout_s: float = 180.0,
        stop_timeout_s: float = 60.0,
        extra_args: tuple[str, ...] = (),
        max_restarts: int = MAX_RESTARTS,
        on_event=None,
        trust_modified: bool = False,
    ):
        from .repository import PLUGIN_FOLDER, TRITON_LOADER, check_repository

        self.repository = Path(repository).resolve()
        # Refused unless its model and python steps are as 'serve repository' wrote them.
        self.models = check_repository(self.repository, trust_modified=trust_modified)
        if not isinstance(environment, ServerEnvironment):
            environment = ServerEnvironment.find(environment)
        self.environment = environment
        self.host = host
        # Clients on this machine reach a server on every interface through loopback.
        self.client_host = LOOPBACK if host in ("0.0.0.0", "::", "") else host
        chosen = iter(free_ports(3))
        self.http_port, self.grpc_port = http_port or next(chosen), grpc_port or next(chosen)
        self.metrics_port = metrics_port or next(chosen)
        # A log of our own choosing goes once Triton has stopped cleanly; after a failure it stays
        # where the error message points.
        self._own_log = None if log else Path(tempfile.mkdtemp(prefix="handssca-triton-"))
        self.log_path = Path(log) if log else self._own_log / "tritonserver.log"
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        loader = self.repository / PLUGIN_FOLDER / TRITON_LOADER
        plugins = [loader] if loader.is_file() else []
        # Explicit model control lets stop() unload the ensembles first (see drain); the repository
        # API that allows it answers only requests carrying this process's own key.
        self._admin = {ADMIN_HEADER: secrets.token_hex(16)}
        restricted = f"model-repository:{ADMIN_HEADER}={self._admin[ADMIN_HEADER]}"
        self.command = [
            str(environment.binary), f"--model-repository={self.repository}",
            f"--backend-directory={environment.backends}", f"--http-address={host}", f"--http-port={self.http_port}",
            f"--grpc-address={host}", f"--grpc-port={self.grpc_port}", f"--metrics-address={host}",
            f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={int(stop_timeout_s)}",
            "--model-control-mode=explicit", "--load-model=*", f"--http-restricted-api={restricted}",
            # How long the python backend waits on a stub that does not answer: after a restart the
            # dead stub's old instance waits this long before it lets Triton exit (default 30 s).
            f"--backend-config=python,stub-timeout-seconds={STUB_TIMEOUT_S}",
            f"--grpc-restricted-protocol={restricted}",
            *([f"--backend-config=tensorrt,plugins={';'.join(map(str, plugins))}"] if plugins else []),
            *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.drained: bool | None = None
        # The watchdog of the python steps (see watch): restarts per model, what it said, and why
        # it gave up (None while it has not).
        self.max_restarts = max_restarts
        self.restarts: dict[str, int] = {}
        self.events: list[str] = []
        self.gave_up: str | None = None
        # serve_until_stopped raises gave_up itself: said once, not also as an event.
        self.announce_give_up = True
        self._on_event = on_event or (lambda line: print(line, file=sys.stderr, flush=True))
        self._stop_watching = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.client_host}:{self.metrics_port}/metrics"

    @property
    def loopback_only(self) -> bool:
        return self.host.startswith("127.") or self.host in ("localhost", "::1")

    def _environ(self) -> dict:
        env = dict(os.environ)
        join = os.pathsep.join
        env["LD_LIBRARY_PATH"] = join([*map(str, self.environment.library_path), env.get("LD_LIBRARY_PATH", "")])
        # The python stub runs models with the python found first on PATH: the server's own.
        env["PATH"] = join([*map(str, self.environment.bin_path), env.get("PATH", "")])
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        # Each python model is its own process. numpy's OpenBLAS threads spin for a while after
        # every matrix product (MANO's), and the mesh step's spinning took about 40% of a core
        # from the network's ONNX Runtime on 2 cores (served latency 93 -> 67 ms without it).
        # The python steps' products are small: one thread each.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return env

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def exited(self, when: str) -> str:
        """How Triton ended, for a message: ``tritonserver exited with CODE WHEN: LINE`` (LINE from
        first_error), or ``tritonserver was killed by SIGKILL WHEN`` when a signal ended it (a
        negative exit code: kill -9, the out-of-memory killer, a crash). Its log then ends on
        whatever it last wrote (on a machine without a GPU, a harmless CUDA line), never why."""
        code = self.process.returncode if self.process else self.exit_code
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            return f"tritonserver was killed by {name} {when}"
        return f"tritonserver exited with {code} {when}: {self.first_error()}"

    def first_error(self) -> str:
        """The log line that says why Triton failed (``failed to load ...``, ``Invalid argument ...``),
        without its prefix and cut to one line: the first error line that is not one of the
        HARMLESS_LOG_LINES, else the first line saying 'failed' or 'error', else the last line."""
        return first_error_line(self.log_tail(400))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> TritonServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        # Appending: the watchdog's lines go into the same log without overwriting Triton's.
        log = open(self.log_path, "ab")  # noqa: SIM115 (the server writes to it until it stops)
        try:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self._environ(),
                                            start_new_session=True)  # fmt: skip
        except OSError as exc:
            log.close()
            raise ServingError(f"{self.environment.binary}: cannot start tritonserver ({exc.strerror or exc})") from exc
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                raise ServingError(f"{self.repository}: {self.exited('before it was ready')} (log: {self.log_path})")
            if self.ready():
                self._start_watchdog()
                return self
            time.sleep(0.2)
        self.kill()
        raise ServingError(
            f"{self.repository}: tritonserver was not ready after {self.start_timeout_s:.0f} s: "
            f"{self.first_error()} (log: {self.log_path})"
        )

    def _stubs(self) -> dict[str, set[int]]:
        """The live python-backend stub processes of this Triton, by model: each stub's command
        line is (binary, model.py path, shm region, sizes, Triton's pid, ...)."""
        stubs: dict[str, set[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if len(args) > 5 and args[0].endswith(b"triton_python_backend_stub") and state != "Z":
                if args[5].decode() == str(self.process.pid):
                    stubs.setdefault(Path(args[1].decode()).parent.parent.name, set()).add(int(entry.name))
        return stubs

    def _start_watchdog(self) -> None:
        if not Path("/proc/self/cmdline").exists():  # no /proc: nothing to watch with
            return
        expected = {model: len(pids) for model, pids in self._stubs().items()}
        self._stop_watching.clear()
        self._watchdog = threading.Thread(target=self._watch, args=(expected,), name="triton-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self, expected: dict[str, int], interval_s: float = 0.5) -> None:
        """A python step whose stub process died (an out-of-memory kill, a crash in native code)
        leaves Triton answering ready while every request to it fails ("Stub process ... is not
        healthy"); reloading the model starts a new stub. At most ``max_restarts`` per model."""
        while not self._stop_watching.wait(interval_s) and self.process.poll() is None:
            alive = self._stubs()
            for model, count in expected.items():
                if not self._stop_watching.is_set() and len(alive.get(model, ())) < count:
                    self._restart(model)

    def _event(self, line: str, announce: bool = True) -> None:
        self.events.append(line)
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"handssca watchdog: {line}\n".encode())
        except OSError:
            pass
        if announce:
            self._on_event(f"handssca serve: {line}")

    def _restart(self, model: str) -> None:
        done = self.restarts.get(model, 0)
        if done >= self.max_restarts:
            if self.gave_up is None:
                self.gave_up = f"the python step of model '{model}' died {done + 1} times: not restarted again"
                self._event(self.gave_up, announce=self.announce_give_up)
            return
        self.restarts[model] = done + 1
        self._event(
            f"the python step of model '{model}' died; reloading it (restart {done + 1} of {self.max_restarts})"
        )
        start = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/config", timeout=10) as response:
                config = json.loads(response.read())
            # A load with the same config is a no-op: a parameter nobody reads makes it a reload.
            config.setdefault("parameters", {})["handssca_restart"] = {"string_value": str(done + 1)}
            body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
            request = urllib.request.Request(
                f"http://{self.http_url}/v2/repository/models/{model}/load", data=body, method="POST",
                headers=self._admin,
            )  # fmt: skip
            with urllib.request.urlopen(request, timeout=self.start_timeout_s):
                pass
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self._event(f"reloading model '{model}' failed: {getattr(exc, 'reason', exc)}")
            return
        self._event(f"model '{model}' reloaded in {time.monotonic() - start:.1f} s")

    def kill(self) -> None:
        """Triton and its python stubs (its process group), at once; nothing if already gone."""
        self._stop_watching.set()
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _repository_call(self, path: str) -> object:
        request = urllib.request.Request(
            f"http://{self.http_url}/v2/repository/{path}", data=b"{}", method="POST", headers=self._admin
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def drain(self) -> bool:
        """Unloads the ensembles and waits until they are unloaded, which Triton does once the
        requests they hold are answered. Needed before SIGTERM: on SIGTERM every model stops
        accepting new requests, and an ensemble's next step is a new request to its next model,
        so an ensemble request in flight would fail half way (seen with this Triton). True when
        drained; False if Triton did not answer or the wait ran out (SIGTERM then goes anyway)."""
        ensembles = [name for name, config in self.models.items() if config.platform == "ensemble"]
        deadline = time.monotonic() + self.stop_timeout_s
        try:
            for name in ensembles:
                self._repository_call(f"models/{name}/unload")
            while time.monotonic() < deadline:
                index = self._repository_call("index") or []
                states = {m["name"]: m.get("state") for m in index}
                if all(states.get(name) in (None, "UNAVAILABLE") for name in ensembles):
                    return True
                time.sleep(0.05)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return False

    def stop(self) -> int:
        """Drains the ensembles, then SIGTERM and wait: Triton answers what the other models hold,
        unloads and exits. The exit code (ServingError if Triton had to be killed)."""
        if self.process is None:
            return 0
        self._stop_watching.set()  # stopping: the stubs go with their models, nothing to restart
        if self._watchdog is not None:  # at once, unless a reload is under way
            self._watchdog.join(timeout=self.start_timeout_s)
        if self.process.poll() is None:
            self.drained = self.drain()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout_s + 10)
            except subprocess.TimeoutExpired:
                self.kill()
                self.exit_code = self.process.returncode
                raise ServingError(
                    f"tritonserver did not stop within {self.stop_timeout_s:.0f} s of SIGTERM: killed "
                    f"(log: {self.log_path})"
                ) from None
        self.kill()  # the python stubs are in Triton's process group: none may outlive it
        self.exit_code = self.process.returncode
        if self.exit_code == 0 and self._own_log is not None:
            shutil.rmtree(self._own_log, ignore_errors=True)
        return self.exit_code

    def __enter__(self) -> TritonServer:
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    @property
    def stop_note(self) -> str | None:
        """Why a stop after a watchdog restart was not clean: requests the dead stub held when it
        died are never answered, so Triton waits for its old instance until its exit timeout."""
        if self.exit_code and self.restarts:
            return (
                f"the python step restarted by the watchdog ({', '.join(self.restarts)}) held requests that never "
                f"finish; Triton exited after its {self.stop_timeout_s:.0f} s exit timeout"
            )
        return None

    def __exit__(self, kind, value, traceback) -> None:
        code = self.stop()
        if code != 0 and kind is None and self.stop_note is None:
            raise ServingError(f"{self.exited('after SIGTERM')} (log: {self.log_path})")


# Messages Triton logs, some as errors, on every start on a machine without a GPU (or on one GPU):
# never the reason a start failed, so first_error_line passes over them.
HARMLESS_LOG_LINES = (
    "CudaDriverHelper has not been initialized",
    "Unable to allocate pinned system memory",
    "CUDA memory pool disabled",
    "Failed to enable peer access",
    "GPU metrics will not be available",
    "Unable to get number of GPUs",
    "unable to create stream for",  # an ensemble's CUDA stream; it runs without one
)
_LOG_PREFIX = re.compile(r"^([EWI])\d{4} [\d:.]+ +\d+ [\w.+-]+:\d+\] ?(.*)$")


def first_error_line(log: str, limit: int = 300) -> str:
    """What first_error quotes from a Triton log's text (see there)."""
    errors, others, last = [], [], ""
    for raw in log.splitlines():
        match = _LOG_PREFIX.match(raw)
        level, message = match.groups() if match else ("", raw)
        # The message is quoted, with its own newlines escaped (a python traceback): its first line.
        message = message.strip().strip('"').split("\\n")[0].strip()
        if not message:
            continue
        last = message
        if any(message.startswith(harmless) for harmless in HARMLESS_LOG_LINES):
            continue
        if level == "E":
            errors.append(message)
        elif "failed" in message.lower() or "error" in message.lower():
            others.append(message)
    line = (errors or others or [last or "no output"])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def serve_until_stopped(server: TritonServer, announce=print) -> int:
    """Starts ``server`` and runs it until Ctrl-C or SIGTERM (what a terminal or a process manager
    sends), then stops it, with both signals ignored while Triton finishes and unloads. Returns
    Triton's exit code; ServingError if it fails to start or exits on its own."""
    import signal

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    server.announce_give_up = False  # the ServingError below says it
    try:
        server.start()  # interrupted before it is ready, Triton is killed: it holds no request yet
        try:  # from here on a signal always means the graceful stop, whatever line it lands on
            announce(
                f"serving {server.repository} on {server.host}: HTTP {server.http_url}, gRPC {server.grpc_url}, "
                f"metrics {server.metrics_url}"
            )
            if not server.loopback_only:
                announce(f"warning: {NO_AUTHENTICATION.format(host=server.host)}")
            announce(f"log: {server.log_path}; Ctrl-C or SIGTERM stops it")
            while server.process.poll() is None and server.gave_up is None:
                time.sleep(0.2)
            if server.gave_up is not None:
                code = server.stop()
                raise ServingError(f"{server.gave_up}; stopped Triton (exit {code}; log: {server.log_path})")
            code = server.process.returncode
        except KeyboardInterrupt:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return server.stop()
            finally:
                signal.signal(signal.SIGINT, previous_int)
        server.exit_code = code
        raise ServingError(f"{server.exited('while serving')} (log: {server.log_path})")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.kill()


@dataclass
class ServeOptions:
    """``handssca serve start``: where Triton listens (Triton's own default ports), its
    environment and its log."""

    host: str = LOOPBACK
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    environment: str | None = None  # the server environment (None: as 'serve setup')
    log: str | None = None  # the server's log file (None: a temporary folder)
    trust_modified: bool = False  # serve a repository changed since 'serve repository' wrote it


def serve_repository(repository: str | Path, options: ServeOptions | None = None) -> str:
    """``handssca serve start``: Triton on ``repository`` until Ctrl-C or SIGTERM; the line that
    says how it stopped (ServingError when it did not stop cleanly)."""
    from functools import partial

    options = options or ServeOptions()
    server = TritonServer(
        repository, environment=options.environment, host=options.host, http_port=options.http_port,
        grpc_port=options.grpc_port, metrics_port=options.metrics_port, log=options.log,
        trust_modified=options.trust_modified,
    )  # fmt: skip
    code = serve_until_stopped(server, announce=partial(print, flush=True))  # flushed: often read through a pipe
    if code != 0:
        if server.stop_note:
            said = f"tritonserver exited with {code} when stopped: {server.stop_note}"
        else:
            said = server.exited("when stopped")
        raise ServingError(f"{said} (log: {server.log_path})")
    return f"stopped: tritonserver exited with {code}"
