"""HTTP client for a running ComfyUI server (stdlib only)."""

from __future__ import annotations

import json
import mimetypes
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from .websocket import EventStream


class ComfyError(RuntimeError):
    pass


class PromptValidationError(ComfyError):
    """POST /prompt answered 400: the prompt did not validate (missing models, bad inputs...)."""

    def __init__(self, response: dict, prompt: dict | None = None):
        self.response = response
        self.error = response.get("error") or {}
        self.node_errors = response.get("node_errors") or {}
        super().__init__(format_validation_error(response, prompt))


class PromptTimeout(TimeoutError):
    """The prompt did not finish within the timeout given to wait()/run()."""


class PromptExecutionError(ComfyError):
    """The prompt was accepted but a node raised while executing."""

    def __init__(self, prompt_id: str, details: dict):
        self.prompt_id = prompt_id
        self.details = details
        self.node_id = str(details.get("node_id", "?"))
        self.node_type = details.get("node_type", "?")
        self.exception_message = str(details.get("exception_message", "")).strip()
        self.traceback = "".join(details.get("traceback") or [])
        super().__init__(
            f"node {self.node_id} ({self.node_type}) failed: "
            f"{details.get('exception_type', 'error')}: {self.exception_message}"
        )


def format_validation_error(response: dict, prompt: dict | None = None) -> str:
    error = response.get("error") or {}
    if error:
        lines = [f"ComfyUI rejected the prompt: {error.get('message', error)}"]
        if error.get("details"):
            lines[0] += f" ({error['details']})"
    else:  # queued for its valid outputs only (answer 200): the runner cancels that
        lines = ["ComfyUI rejected the prompt: some nodes did not validate"]
    for node_id, node_error in (response.get("node_errors") or {}).items():
        class_type = node_error.get("class_type") or (prompt or {}).get(node_id, {}).get(
            "class_type", "?")
        title = ((prompt or {}).get(node_id, {}).get("_meta") or {}).get("title")
        name = f"node {node_id} ({class_type}{', ' + repr(title) if title and title != class_type else ''})"
        for item in node_error.get("errors", []):
            detail = item.get("details") or ""
            lines.append(f"  {name}: {item.get('message', '')}{': ' + detail if detail else ''}")
    return "\n".join(lines)


class ComfyClient:
    def __init__(self, url: str = "http://127.0.0.1:8188", timeout: float = 60.0,
                 client_id: str | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = client_id or uuid.uuid4().hex

    # -- plumbing ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, data: bytes | None = None,
                 headers: dict | None = None, timeout: float | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
            return response.read()

    def get_json(self, path: str):
        body = self._request("GET", path)
        try:
            return json.loads(body)
        except ValueError:
            raise ComfyError(f"{self.url}{path} did not answer JSON ({body[:80]!r}...): is "
                             "this a ComfyUI server?") from None

    def post_json(self, path: str, payload) -> dict:
        body = self._request("POST", path, json.dumps(payload).encode(),
                             {"Content-Type": "application/json"})
        return json.loads(body) if body.strip() else {}

    # -- server -----------------------------------------------------------------------------
    def is_alive(self, timeout: float = 2.0) -> bool:
        try:
            self._request("GET", "/system_stats", timeout=timeout)
            return True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def object_info(self, node_class: str | None = None) -> dict:
        path = "/object_info" + (f"/{urllib.parse.quote(node_class)}" if node_class else "")
        return self.get_json(path)

    def workflow_templates(self) -> dict:
        """{custom node folder name: [workflow names]} from the packs' workflow folders."""
        return self.get_json("/api/workflow_templates")

    def queue(self) -> dict:
        return self.get_json("/queue")

    def interrupt(self) -> None:
        self._request("POST", "/interrupt", b"")

    def cancel(self, prompt_id: str, timeout: float = 10.0) -> None:
        """Take the prompt off the queue, or stop it if it runs (ComfyUI 0.3.75 interrupts only that
        prompt; servers without targeted interrupts stop whatever runs)."""
        body = lambda data: (json.dumps(data).encode(), {"Content-Type": "application/json"})
        self._request("POST", "/queue", *body({"delete": [prompt_id]}), timeout=timeout)
        self._request("POST", "/interrupt", *body({"prompt_id": prompt_id}), timeout=timeout)

    # -- prompts ----------------------------------------------------------------------------
    def queue_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises PromptValidationError."""
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        try:
            answer = self.post_json("/prompt", payload)
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            try:
                response = json.loads(body)
            except ValueError:
                raise ComfyError(f"POST /prompt failed: HTTP {error.code}: {body[:2000]}") from None
            raise PromptValidationError(response, prompt) from None
        if answer.get("node_errors"):
            # ComfyUI queued the outputs that validated; a half graph is not what was asked for.
            if answer.get("prompt_id"):
                try:
                    self.cancel(answer["prompt_id"])
                except OSError:
                    pass
            raise PromptValidationError(answer, prompt)
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float | None = None, poll: float = 0.25,
             progress: Callable[[dict], None] | None = None,
             events: EventStream | None = None) -> dict:
        """Wait until the prompt finishes; returns its /history entry.

        progress(event) is called with websocket events ({"type", "data"}) when `events` is given,
        else with {"type": "status", "data": {"elapsed": seconds}} about once a second.
        Raises PromptExecutionError when a node failed, PromptTimeout after `timeout` seconds.
        """
        start = time.monotonic()
        last_tick = 0.0

        def forward_events():
            for event in events.drain() if events is not None else ():
                data = event.get("data") or {}
                if data.get("prompt_id", prompt_id) == prompt_id and progress:
                    progress(event)

        while True:
            forward_events()
            entry = self.history(prompt_id)
            if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                if events is not None:
                    time.sleep(0.05)  # the last websocket events may trail the history entry
                    forward_events()
                status = entry["status"]
                if status.get("status_str") == "error" or not status.get("completed"):
                    raise PromptExecutionError(prompt_id, _execution_error(status))
                return entry
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed > timeout:
                raise PromptTimeout(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            if progress and events is None and elapsed - last_tick >= 1.0:
                last_tick = elapsed
                progress({"type": "status", "data": {"elapsed": elapsed}})
            time.sleep(poll)

    def events(self) -> EventStream:
        """A websocket event stream for this client_id (start it before queue_prompt)."""
        return EventStream(self.url, self.client_id)

    def run(self, prompt: dict, timeout: float | None = None,
            progress: Callable[[dict], None] | None = None, extra_data: dict | None = None,
            live: bool = True) -> dict:
        """Queue and wait; returns the /history entry. live: listen on the websocket for
        progress events (falls back to polling if the websocket does not connect)."""
        stream = None
        if live and progress is not None:
            try:
                stream = self.events().start()
            except OSError:
                stream = None
        try:
            prompt_id = self.queue_prompt(prompt, extra_data)
            try:
                return self.wait(prompt_id, timeout=timeout, progress=progress, events=stream)
            except (KeyboardInterrupt, TimeoutError):  # don't leave the server busy with it
                try:
                    self.cancel(prompt_id)
                except OSError:
                    pass
                raise
        finally:
            if stream is not None:
                stream.close()

    # -- files ------------------------------------------------------------------------------
    def upload_image(self, path: str | os.PathLike, name: str | None = None,
                     subfolder: str = "", overwrite: bool = True, kind: str = "input") -> str:
        """Upload a file to the server's input (or temp) folder; returns the value to put in a
        LoadImage `image` widget ("subfolder/name" or "name")."""
        path = Path(path)
        boundary = uuid.uuid4().hex
        fields = {"type": kind, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        parts = []
        for key, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                         f"{value}\r\n".encode())
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{name or path.name}"\r\nContent-Type: {mime}\r\n\r\n'.encode()
            + path.read_bytes() + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        body = self._request("POST", "/upload/image", b"".join(parts),
                             {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        answer = json.loads(body)
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        return self._request("GET", f"/view?{query}")

    @staticmethod
    def output_files(entry: dict, kinds: tuple[str, ...] = ("output",)) -> list[dict]:
        """Files listed in a /history entry: [{node_id, filename, subfolder, type}] for every
        output list (images, gifs, ...) whose items have a filename."""
        files = []
        for node_id, outputs in (entry.get("outputs") or {}).items():
            for items in outputs.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type") in kinds:
                        files.append({"node_id": node_id, **item})
        return files

    def download_outputs(self, entry: dict, out_dir: str | os.PathLike,
                         kinds: tuple[str, ...] = ("output",)) -> list[Path]:
        """Download the files of a /history entry into out_dir (flat; same names as on the server)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for item in self.output_files(entry, kinds):
            target = out_dir / item["filename"]
            target.write_bytes(self.view(item["filename"], item.get("subfolder", ""), item["type"]))
            written.append(target)
        return written


def _execution_error(status: dict) -> dict:
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2:
            if message[0] == "execution_error":
                return message[1]
            if message[0] == "execution_interrupted":
                return {**message[1], "exception_type": "interrupted",
                        "exception_message": "execution was interrupted"}
    return {"exception_message": f"status {status.get('status_str')!r}, no error message"}


def print_progress(event: dict, stream=sys.stderr, node_names: dict | None = None) -> None:
    """A `progress` callback for ComfyClient.wait/run printing one line per event."""
    kind, data = event.get("type"), event.get("data") or {}
    name = lambda node: f"{node} ({(node_names or {}).get(str(node), '?')})" if node_names else str(node)
    if kind == "executing" and data.get("node") is not None:
        print(f"  running node {name(data['node'])}", file=stream, flush=True)
    elif kind == "progress":
        print(f"    step {data.get('value')}/{data.get('max')}  node {name(data.get('node'))}",
              file=stream, flush=True)
    elif kind == "execution_cached" and data.get("nodes"):
        print(f"  cached: {', '.join(map(str, data['nodes']))}", file=stream, flush=True)
    elif kind == "status" and "elapsed" in data:
        print(f"  waiting... {data['elapsed']:.0f} s", file=stream, flush=True)
