"""An emulated aarch64 board serving TVM RPC on 127.0.0.1, for tests and demos without hardware.

The board is a Debian bookworm arm64 sysroot (python3.11 and its libraries, unpacked from .debs
fetched with a private apt configuration: no chroot, no binfmt_misc needed) plus aarch64 wheels of
the TVM runtime, run under ``qemu-aarch64-static``. ``start`` launches, each in its own process
group, an RPC tracker (host Python) and two board servers: one for direct connections on
``port`` and one registered with the tracker under ``key`` on ``port + 1`` (a tracked server only
accepts clients the tracker sent). The PIDs are recorded and ``stop`` ends only those.

Emulated timings are 60-200x slower than a real board and say nothing about its speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TvmcompError

DEBIAN_SOURCE = "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main"
DEBIAN_PACKAGES = ["python3.11", "libstdc++6", "libgcc-s1"]
WHEELS = ["apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy", "ml_dtypes",
          "typing_extensions", "psutil", "cloudpickle", "tornado"]
# the board only runs compiled libraries: the compiler (230 MB) and CUDA runtime are dropped
UNUSED_LIBRARIES = ["libtvm_compiler.so", "libtvm_runtime_cuda.so"]
QEMU = "qemu-aarch64-static"
HOST_TOOLS = {QEMU: "qemu-user-static", "apt-get": "apt", "dpkg-deb": "dpkg"}
SERVER_SCRIPT = Path(__file__).with_name("server.py")
START_TIMEOUT_S = 180


def default_dir() -> Path:
    return Path(os.environ.get("TVMCOMP_BOARD_DIR") or Path.home() / ".cache" / "tvmcomp" / "board")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Board:
    root: Path

    @property
    def sysroot(self) -> Path:
        return self.root / "sysroot"

    @property
    def site(self) -> Path:
        return self.root / "site-packages"

    @property
    def state_file(self) -> Path:
        return self.root / "board.json"

    # --- building the board -------------------------------------------------------------------
    def is_built(self) -> bool:
        return (self.root / "built").is_file()

    def build(self, stream=None) -> None:
        """Fetch and unpack the sysroot and the aarch64 wheels (about 30 s and 250 MB)."""
        stream = stream or sys.stderr
        for tool, package in HOST_TOOLS.items():
            if shutil.which(tool) is None:
                raise TvmcompError(f"the emulated board needs '{tool}' (Debian/Ubuntu: apt-get install {package})")
        shutil.rmtree(self.root / "staging", ignore_errors=True)
        staging = Board(self.root / "staging")
        print(f"[board] fetching the arm64 sysroot ({', '.join(DEBIAN_PACKAGES)}) into {self.root}", file=stream, flush=True)
        staging._fetch_sysroot()
        print("[board] installing aarch64 TVM runtime wheels", file=stream, flush=True)
        staging._install_wheels()
        for name in ("sysroot", "site-packages"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            (staging.root / name).rename(self.root / name)
        shutil.rmtree(staging.root)
        # One run of the board's Python checks that it works and compiles the modules the servers
        # import, so the first start is like every later one (two emulated processes otherwise
        # compile the same .pyc files at once; a server died silently at such a first start in CI).
        print("[board] checking the board's Python and TVM runtime under qemu", file=stream, flush=True)
        _run([*self.python(), "-c", "import tvm.rpc.server, numpy"], "running the board's Python", env=self.environment())
        (self.root / "built").write_text("ok\n")

    def _fetch_sysroot(self) -> None:
        apt = self.root / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (apt / sub).mkdir(parents=True, exist_ok=True)
        (apt / "sources.list").write_text(DEBIAN_SOURCE + "\n")
        (apt / "status").write_text("")  # nothing installed: apt resolves every dependency
        options = []
        for key, value in {
            "APT::Architecture": "arm64", "APT::Architectures::": "arm64",
            "Dir::Etc::SourceList": apt / "sources.list", "Dir::Etc::SourceParts": apt / "sources.list.d",
            "Dir::State::Lists": apt / "lists", "Dir::State::status": apt / "status", "Dir::Cache": apt / "cache",
            "Debug::NoLocking": "1", "APT::Install-Recommends": "false", "APT::Sandbox::User": "root",
        }.items():
            options += ["-o", f"{key}={value}"]
        _run(["apt-get", *options, "-q", "update"], "apt-get update for the arm64 sysroot")
        _run(["apt-get", *options, "-q", "-y", "install", "--download-only", *DEBIAN_PACKAGES], "downloading arm64 packages")
        for deb in sorted((apt / "cache" / "archives").glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(self.sysroot)], f"unpacking {deb.name}")
        shutil.rmtree(apt)

    def _install_wheels(self) -> None:
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(self.site),
              "--platform", "manylinux_2_28_aarch64", "--only-binary=:all:", "--python-version", "3.11",
              "--implementation", "cp", *WHEELS], "installing aarch64 wheels")
        for name in UNUSED_LIBRARIES:
            (self.site / "tvm" / "lib" / name).unlink(missing_ok=True)

    # --- running it ----------------------------------------------------------------------------
    def python(self) -> list[str]:
        return [QEMU, "-L", str(self.sysroot), str(self.sysroot / "usr" / "bin" / "python3.11")]

    def environment(self) -> dict:
        return dict(os.environ, PYTHONPATH=str(self.site), TVM_USE_RUNTIME_LIB="1", PYTHONUNBUFFERED="1")

    def state(self) -> dict | None:
        """The running board's ports and PIDs, or None; a record whose processes are gone is dropped."""
        if not self.state_file.is_file():
            return None
        state = json.loads(self.state_file.read_text())
        if not any(_alive(pid) for pid in state["pids"].values()):
            self.state_file.unlink()
            return None
        return state

    def start(self, port: int = 9090, tracker_port: int = 9190, key: str = "rasp4", stream=None) -> dict:
        stream = stream or sys.stderr
        if (running := self.state()) is not None:
            raise TvmcompError(f"the board is already running (port {running['port']}); `tvmcomp board stop` first")
        for wanted in (port, port + 1, tracker_port):
            if _port_open(wanted):
                raise TvmcompError(f"port {wanted} on 127.0.0.1 is already in use; choose another with --port/--tracker-port")
        if not self.is_built():
            self.build(stream)
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        runtime_extra = self.site / "tvm" / "lib" / "libtvm_runtime_extra.so"  # MetaSchedule's measurements need it
        server = [*self.python(), str(SERVER_SCRIPT), "--load-library", str(runtime_extra)]
        commands = {
            "tracker": [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tracker_port),
                        "--port-end", str(tracker_port + 1)],
            "server": [*server, "--port", str(port)],
            "tracked_server": [*server, "--port", str(port + 1), "--tracker", f"127.0.0.1:{tracker_port}", "--key", key],
        }
        processes = {}
        for name, command in commands.items():
            env = self.environment() if name != "tracker" else os.environ
            with open(logs / f"{name}.log", "w") as log:
                processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        pids = {name: process.pid for name, process in processes.items()}
        state = {"port": port, "tracker_port": tracker_port, "key": key, "pids": pids, "logs": str(logs)}
        self.state_file.write_text(json.dumps(state, indent=1) + "\n")
        print(f"[board] starting (emulated aarch64; logs in {logs})", file=stream, flush=True)
        try:
            self._wait_ready(state, processes)
        except TvmcompError:
            self.stop()
            raise
        return state

    def _wait_ready(self, state: dict, processes: dict) -> None:
        from tvm import rpc

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            dead = [name for name, process in processes.items() if process.poll() is not None]
            if dead:
                log = Path(state["logs"]) / f"{dead[0]}.log"
                last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or [""]
                raise TvmcompError(f"board process '{dead[0]}' exited at start with status "
                                   f"{processes[dead[0]].returncode} ({last[0].strip()}); see {log}")
            if _port_open(state["port"]) and _port_open(state["tracker_port"]):
                queues = rpc.connect_tracker("127.0.0.1", state["tracker_port"]).summary()["queue_info"]
                if queues.get(state["key"], {}).get("free", 0) > 0:
                    return
            time.sleep(1)
        raise TvmcompError(f"the board did not come up within {START_TIMEOUT_S} s; see the logs in {state['logs']}")

    def stop(self) -> bool:
        """End the processes this board started (and their session children); False if none ran."""
        if not self.state_file.is_file():
            return False
        state = json.loads(self.state_file.read_text())
        for pid in state["pids"].values():
            if _alive(pid):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in state["pids"].values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in state["pids"].values():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        self.state_file.unlink()
        return True


def _alive(pid: int) -> bool:
    """True if ``pid`` runs and is still a process this board started (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"rpc_tracker" in cmdline or SERVER_SCRIPT.name.encode() in cmdline


def _run(command: list[str], what: str, env: dict | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TvmcompError(f"{what} failed: {detail[0]}")
