"""Start and stop a ComfyUI server as a subprocess (`with ComfyServer() as server: ...`)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import ComfyClient, ComfyError
from .comfy_root import PACK_LINK_NAME, PACK_ROOT, default_python, find_comfy_root

MODEL_FOLDERS = (
    "checkpoints",
    "vae",
    "clip",
    "clip_vision",
    "diffusion_models",
    "loras",
    "text_encoders",
    "upscale_models",
)


class ComfyStartError(ComfyError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on host:port (SO_REUSEADDR: a port in TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def pack_link(custom_nodes: Path, pack_root: Path = PACK_ROOT) -> Path | None:
    """The entry of `custom_nodes` that is this pack (by real path), if any."""
    if not custom_nodes.is_dir():
        return None
    for entry in custom_nodes.iterdir():
        try:
            if entry.resolve() == pack_root.resolve():
                return entry
        except OSError:
            continue
    return None


def prepare_base_dir(
    base_dir: str | os.PathLike, pack_root: str | os.PathLike = PACK_ROOT
) -> Path:
    """Make `base_dir` usable as ComfyUI's --base-directory: the pack linked into
    custom_nodes/ (unless already there under another name), model folders, input/ and output/."""
    base = Path(base_dir).expanduser().absolute()
    pack_root = Path(pack_root).resolve()
    for sub in ["custom_nodes", "input", "output"] + [f"models/{m}" for m in MODEL_FOLDERS]:
        (base / sub).mkdir(parents=True, exist_ok=True)
    if pack_link(base / "custom_nodes", pack_root) is None:
        link = base / "custom_nodes" / PACK_LINK_NAME
        if link.is_symlink():
            link.unlink()  # a stale link to another checkout
        link.symlink_to(pack_root, target_is_directory=True)
    return base


_ACCELERATOR_CACHE: dict[str, bool] = {}


def torch_has_accelerator(python: str | os.PathLike) -> bool:
    """Whether torch in `python` sees CUDA or MPS (ComfyUI then runs without --cpu)."""
    key = str(python)
    if key not in _ACCELERATOR_CACHE:
        if sys.platform.startswith("linux") and not _gpu_device_nodes():
            # No GPU driver device: CUDA/ROCm cannot be available; skip a 3 s torch import.
            found = False
        elif Path(key).resolve() == Path(sys.executable).resolve() and "torch" in sys.modules:
            torch = sys.modules["torch"]
            mps = getattr(torch.backends, "mps", None)
            found = torch.cuda.is_available() or bool(mps and mps.is_available())
        else:
            code = (
                "import torch, sys; m = getattr(torch.backends, 'mps', None); "
                "sys.stdout.write('1' if torch.cuda.is_available() or (m is not None and "
                "m.is_available()) else '0')"
            )
            try:
                out = subprocess.run([key, "-c", code], capture_output=True, text=True, timeout=300)
            except OSError:  # not a Python: starting the server will say so
                return False
            found = out.stdout.strip() == "1"
        _ACCELERATOR_CACHE[key] = found
    return _ACCELERATOR_CACHE[key]


def _gpu_device_nodes() -> bool:
    dev = Path("/dev")
    return any((dev / name).exists() for name in ("nvidiactl", "nvidia0", "kfd", "dxg"))


class ComfyServer:
    """A ComfyUI server subprocess.

    comfy_root  ComfyUI tree (default: find_comfy_root()).
    base_dir    --base-directory (models/, custom_nodes/, input/, output/ ...). None: a fresh
                temporary directory, deleted on stop (kept if start-up failed, or if
                keep_base_dir is set). The pack is linked into its custom_nodes/.
                Pass comfy_root itself to use that tree's own folders (a user's models).
    port        None: a free port.
    extra_args  appended to main.py's arguments.
    log_path    server log file (stdout+stderr). None: <base_dir>/comfyui.log.
    cpu         None: --cpu unless torch sees CUDA/MPS.
    require_pack  raise if the log shows that this pack failed to import.
    """

    def __init__(
        self,
        comfy_root: str | os.PathLike | None = None,
        base_dir: str | os.PathLike | None = None,
        port: int | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        log_path: str | os.PathLike | None = None,
        *,
        python: str | os.PathLike | None = None,
        cpu: bool | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 180.0,
        require_pack: bool = True,
        disable_api_nodes: bool = True,
        quiet: bool = False,
    ):
        self.comfy_root = find_comfy_root(comfy_root)
        self._own_base_dir = base_dir is None
        self.base_dir = Path(base_dir).expanduser().absolute() if base_dir else None
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.log_path = Path(log_path).absolute() if log_path else None
        self.python = Path(python) if python else default_python()
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.require_pack = require_pack
        self.disable_api_nodes = disable_api_nodes
        self.quiet = quiet
        self.keep_base_dir = False
        self.process: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def client(self) -> ComfyClient:
        return ComfyClient(self.url)

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def command(self) -> list[str]:
        cmd = [str(self.python), str(self.comfy_root / "main.py")]
        if self.cpu is None:
            self.cpu = not torch_has_accelerator(self.python)
        if self.cpu:
            cmd.append("--cpu")
        cmd += ["--listen", self.host, "--port", str(self.port)]
        if self.base_dir.resolve() != self.comfy_root.resolve():
            cmd += ["--base-directory", str(self.base_dir)]
        cmd += ["--database-url", "sqlite:///:memory:"]
        if self.disable_api_nodes:
            cmd.append("--disable-api-nodes")
        return cmd + self.extra_args

    def log_text(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def start(self) -> "ComfyServer":
        if self.process is not None:
            raise ComfyStartError("server already started")
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="comfyui-inverse-"))
        try:
            prepare_base_dir(self.base_dir)
        except OSError as error:
            raise ComfyStartError(
                f"cannot set up the base directory {self.base_dir} (--base-dir): "
                f"{error.strerror or error} ({error.filename}); give a folder you can write to") from None
        if self.port is None:
            self.port = free_port(self.host)
        elif port_taken(self.host, self.port):
            # Checked first: another server on the port would answer our readiness probe.
            raise ComfyStartError(
                f"port {self.port} on {self.host} is already in use (another ComfyUI?): choose "
                f"another --port, leave --port out for a free one, or use the running server "
                f"with --server http://{self.host}:{self.port}")
        if self.log_path is None:
            self.log_path = self.base_dir / "comfyui.log"
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "w")
        except OSError as error:
            raise ComfyStartError(f"cannot write the server log {self.log_path} (--log): "
                                  f"{error.strerror or error}; give a file in a folder you can write to") from None
        cmd = self.command()
        if not self.quiet:
            print(f"[comfyui-inverse] starting ComfyUI on {self.url} (log: {self.log_path})",
                  file=sys.stderr, flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Own session: a Ctrl-C in the terminal reaches us, and we stop the server cleanly.
        try:
            self.process = subprocess.Popen(
                cmd, cwd=self.comfy_root, stdout=self._log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        except OSError as error:
            self._log_file.close()
            self._log_file = None
            raise ComfyStartError(f"cannot run {self.python} ({error.strerror or error}): set "
                                  "COMFYUI_PYTHON to the Python of ComfyUI's environment") from None
        try:
            self._wait_ready()
            if self.require_pack:
                self.check_pack_imported()
        except BaseException:
            self.keep_base_dir = True  # for the log
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        client = ComfyClient(self.url, timeout=2)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_text()
                hint = ""
                if "ModuleNotFoundError" in log:
                    hint = (f"\n{self.python} lacks a module ComfyUI needs: run with the Python of "
                            "ComfyUI's environment (or set COMFYUI_PYTHON to it), or install "
                            "ComfyUI's requirements.txt there.")
                raise ComfyStartError(
                    f"ComfyUI exited with code {self.process.returncode} during start-up.\n"
                    f"command: {' '.join(self.command())}\nlog ({self.log_path}):\n"
                    + _tail(log) + hint
                )
            if client.is_alive():
                return
            time.sleep(0.2)
        raise ComfyStartError(
            f"ComfyUI did not answer on {self.url}/system_stats within {self.startup_timeout:.0f} s."
            f"\nlog ({self.log_path}):\n" + _tail(self.log_text())
        )

    def exit_report(self) -> str | None:
        """When the server process has ended on its own: its exit code and log tail, else None."""
        process = self.process
        if process is None or process.poll() is None:
            return None
        code = process.returncode
        why = {-9: " (killed: often the system running out of memory)",
               -15: " (terminated by a signal)"}.get(code, "")
        return (f"ComfyUI stopped while running the workflow: exit code {code}{why}.\n"
                f"log ({self.log_path}):\n" + _tail(self.log_text()))

    def pack_module_path(self) -> list[str]:
        """How ComfyUI names the pack in its log: <custom_nodes folder>/<entry name>."""
        link = pack_link(self.base_dir / "custom_nodes")
        name = link.name if link else PACK_LINK_NAME
        folder = self.base_dir / "custom_nodes"
        return sorted({os.path.join(os.path.abspath(folder), name),
                       os.path.join(os.path.realpath(folder), name)})

    def pack_import_error(self) -> str | None:
        """Why the pack did not load (log excerpt), or None if ComfyUI imported it."""
        log = self.log_text()
        paths = self.pack_module_path()
        ends_with_pack = lambda line: any(
            line.rstrip().endswith(p) or f"{p} module" in line for p in paths)
        failed = [
            line for line in log.splitlines()
            if ends_with_pack(line)
            and ("IMPORT FAILED" in line or "Cannot import" in line
                 or "Error while calling comfy_entrypoint" in line or "Skip " in line)
        ]
        if not failed:
            if any(ends_with_pack(line) and "seconds" in line for line in log.splitlines()):
                return None
            return (f"ComfyUI did not list {paths[0]} among its custom nodes "
                    "(see 'Import times for custom nodes' in the log).")
        # ComfyUI logs the traceback just before its "Cannot import ..." line.
        end = log.find(failed[0])
        start = log.rfind("Traceback (most recent call last)", 0, end)
        detail = log[start:end] + "\n" if start >= 0 else ""
        return _tail(detail + "\n".join(failed), 60)

    def check_pack_imported(self) -> None:
        error = self.pack_import_error()
        if error:
            raise ComfyStartError(
                f"ComfyUI started but the comfyui-inverse pack failed to import "
                f"(log: {self.log_path}):\n{error}"
            )

    def stop(self, grace: float = 3.0) -> None:
        """SIGINT (ComfyUI logs "Stopped server" and cleans its temp folder at once, but then
        spends ~12 s in interpreter shutdown), so SIGTERM shortly after, SIGKILL as a last resort."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + grace  # SIGINT may be ignored (nohup, bg jobs)
            stopped_at = None
            while process.poll() is None and time.monotonic() < deadline:
                if stopped_at is None and "Stopped server" in self.log_text():
                    stopped_at = time.monotonic()
                if stopped_at is not None and time.monotonic() - stopped_at > 1.0:
                    break
                time.sleep(0.05)
            for stop_signal in (signal.SIGTERM, signal.SIGKILL):
                if process.poll() is not None:
                    break
                process.send_signal(stop_signal)
                try:
                    process.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    pass
            process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_base_dir and not self.keep_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
