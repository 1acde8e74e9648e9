"""A local HTTP server for the fetch tests: static files with Range and If-Range, faults, and a
fake Google Drive with its large-file confirmation step.

Static files behave like a CDN's: a strong ETag (or only Last-Modified, or a weak ETag, or
nothing, per `validators`), Range answered with 206, and If-Range honoured as RFC 9110 says (a
validator that no longer matches gets the whole file, 200). The fake Drive follows the flow that
gdown handles: `/uc?id=<id>` redirects to `/download?id=<id>&export=download`, which sends a
small file, or for a file above `drive_scan_limit` an HTML page whose "Download anyway" button
(`drive_page`: "form" = the 2024 GET form with hidden id/export/confirm/uuid, "link" = the
pre-2022 link with a confirm token that only works with the page's `download_warning` cookie,
"quota" = Drive's refusal page) leads to the file.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

FAST = dict(retries=2, backoff=0.0, timeout=5.0, progress=False)
CLI_FAST = ["--retries", "1", "--backoff", "0", "--no-progress"]

CONFIRM_PAGE_FORM = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this
file for viruses.</p><p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">
{name}</a> ({size})</span> is too large for Google to scan for viruses. Would you still like to download
this file?</p><form id="download-form" action="{action}" method="get"><input type="submit"
id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download"><input
type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form></div></div>
</body></html>""".replace("\n", " ")  # Drive sends its pages as one line

CONFIRM_PAGE_LINK = """<html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<a id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action"
href="/uc?export=download&amp;confirm={token}&amp;id={id}">Download anyway</a></div></body></html>""".replace(
    "\n", " ")

QUOTA_PAGE = """<html><head><title>Google Drive - Quota exceeded</title></head><body><div class="uc-main">
<p class="uc-error-caption">Sorry, you can't view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try
accessing the file again later.</p></div></body></html>""".replace("\n", " ")


class FileServer:
    """Serves `files` (url path -> bytes) and `drive` (file id -> (name, bytes)) on 127.0.0.1.

    `script`: one dict of faults a request, consumed in order: {"drop": n} sends n body bytes and
    drops the connection, {"status": 503} fails, {"stall": s} sleeps s seconds first, {"slow": s}
    sends the body in 10 pieces over s seconds, {"gate": threading.Event} sends half the body and
    the rest once the event is set. Flags for every request: `ignore_range`,
    `ignore_if_range` (answers Range with 206 whatever If-Range says), `wrong_bytes` (each byte
    XOR 0x5A), `no_content_length` (the body ends when the connection closes). `types`: a
    Content-Type per path. `requests`: (path, headers) of each request.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.types: dict[str, str] = {}
        self.drive: dict[str, tuple[str, bytes]] = {}
        self.drive_scan_limit = 100_000
        self.drive_page = "form"
        self.requests: list[tuple[str, dict]] = []
        self.script: list[dict] = []
        self.validators = "etag"
        self.ignore_range = self.ignore_if_range = self.wrong_bytes = self.no_content_length = False
        self._lock = threading.Lock()
        self._uuids: set[str] = set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self) -> list[str | None]:
        return [headers.get("Range") for _, headers in self.requests]

    def validator_headers(self, data: bytes) -> dict[str, str]:
        digest = hashlib.sha1(data).hexdigest()
        stamp = email.utils.formatdate(1_500_000_000 + int(digest[:6], 16), usegmt=True)
        return {"etag": {"ETag": f'"{digest[:16]}"', "Last-Modified": stamp},
                "last_modified": {"Last-Modified": stamp},
                "weak": {"ETag": f'W/"{digest[:16]}"'}}.get(self.validators, {})

    def if_range_matches(self, value: str, data: bytes) -> bool:
        headers = self.validator_headers(data)
        strong = [v for k, v in headers.items() if not v.startswith("W/")]
        return value in strong

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with srv._lock:
                    srv.requests.append((self.path, dict(self.headers)))
                    fault = srv.script.pop(0) if srv.script else {}
                time.sleep(fault.get("stall", 0))
                if "status" in fault:
                    return self.send_error(fault["status"])
                path, _, query = self.path.partition("?")
                params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
                if path == "/uc" and "id" in params:
                    return self.redirect(params)
                if path == "/download" and params.get("id") in srv.drive:
                    return self.drive_download(params, fault)
                if path in srv.files:
                    return self.serve(srv.files[path], fault, srv.types.get(path))
                return self.send_error(404)

            def redirect(self, params):
                params.setdefault("export", "download")
                self.send_response(303)
                self.send_header("Location", f"{srv.base}/download?{urllib.parse.urlencode(params)}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def drive_download(self, params, fault):
                name, data = srv.drive[params["id"]]
                if len(data) > srv.drive_scan_limit and not self.confirmed(params):
                    return self.page(params["id"], name, len(data))
                disposition = f'attachment; filename="{name}"'
                return self.serve(data, fault, "application/octet-stream", disposition)

            def confirmed(self, params):
                if srv.drive_page == "form":
                    return params.get("confirm") == "t" and params.get("uuid") in srv._uuids
                if srv.drive_page == "link":
                    token = "Tk" + params["id"][:4]
                    return params.get("confirm") == token and f"download_warning_1={token}" in \
                        self.headers.get("Cookie", "")
                return False

            def page(self, file_id, name, size):
                uuid = f"uuid-{len(srv._uuids)}"
                srv._uuids.add(uuid)
                body = {"form": CONFIRM_PAGE_FORM, "link": CONFIRM_PAGE_LINK, "quota": QUOTA_PAGE}[srv.drive_page]
                body = body.format(id=file_id, name=html.escape(name), size=size, uuid=uuid,
                                   action=f"{srv.base}/download", token="Tk" + file_id[:4]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                if srv.drive_page == "link":
                    self.send_header("Set-Cookie", f"download_warning_1=Tk{file_id[:4]}; Path=/")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def serve(self, data, fault, content_type=None, disposition=None):
                data = bytes(b ^ 0x5A for b in data) if srv.wrong_bytes else data
                ranged = "Range" in self.headers and not srv.ignore_range
                if ranged and "If-Range" in self.headers and not srv.ignore_if_range:
                    ranged = srv.if_range_matches(self.headers["If-Range"], data)
                start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if ranged else 0
                if ranged and start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(206 if ranged else 200)
                for key, value in srv.validator_headers(data).items():
                    self.send_header(key, value)
                if content_type:
                    self.send_header("Content-Type", content_type)
                if disposition:
                    self.send_header("Content-Disposition", disposition)
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if not srv.no_content_length:
                    self.send_header("Content-Length", str(len(data) - start))
                self.close_connection = True
                self.end_headers()
                body = data[start:start + fault.get("drop", len(data))]
                if "gate" in fault:  # half the body, then wait until the test opens the gate
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    fault["gate"].wait(60)
                    self.wfile.write(body[len(body) // 2:])
                elif "slow" in fault:
                    step = -(-len(body) // 10)
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(fault["slow"] / 10)
                else:
                    self.wfile.write(body)
                if "drop" in fault:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

        return Handler

    def start(self) -> "FileServer":
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- helpers shared by the fetch tests -------------------------------------------

def random_bytes(n: int = 300_000) -> bytes:
    return np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes()


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings (atomic writes) and part files that a failed run must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


def dannasep(*args: str, preexec_fn=None) -> subprocess.Popen:
    """`python -m dannasep ARGS` in a new process (this worktree's code: PYTHONPATH is inherited)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "dannasep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=preexec_fn)


def file_size_limit(limit: int):
    """For a child process: writes past `limit` bytes fail with EFBIG (as on a full filesystem)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply
