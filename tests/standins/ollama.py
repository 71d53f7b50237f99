"""A stand-in for an Ollama server: its HTTP API (/api/show, /api/chat NDJSON stream).

Ollama itself cannot be installed here; this speaks its wire protocol so the real `ollama`
client and the policy stage's OllamaBackend are tested end to end. It answers with a
scripted reply, records every request, and can be told to fail.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OllamaStandIn:
    models: set[str] = field(default_factory=lambda: {"llama3.2"})
    reply_tokens: list[str] = field(default_factory=lambda: ["[happy]", " Hello", " chat", "!"])
    fail_next: int = 0  # answer this many /api/chat requests with HTTP 500
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _handler(state: OllamaStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked NDJSON streaming, as Ollama does

        def log_message(self, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
            state.requests.append({"path": self.path, **body})
            model = body.get("model") or body.get("name")
            if self.path == "/api/show":
                if model not in state.models:
                    self._json(404, {"error": f"model '{model}' not found"})
                else:
                    self._json(
                        200,
                        {
                            "modelfile": "",
                            "template": "{{ .Prompt }}",
                            "details": {"family": "stand-in", "format": "gguf"},
                            "model_info": {"general.architecture": "stand-in"},
                            "capabilities": ["completion"],
                        },
                    )
                return
            if self.path != "/api/chat":
                self._json(404, {"error": "not found"})
                return
            if state.fail_next > 0:
                state.fail_next -= 1
                self._json(500, {"error": "stand-in told to fail"})
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for token in state.reply_tokens:
                self._chunk(
                    {
                        "model": model,
                        "created_at": "2026-11-21T00:00:00Z",
                        "message": {"role": "assistant", "content": token},
                        "done": False,
                    }
                )
            self._chunk(
                {
                    "model": model,
                    "created_at": "2026-11-21T00:00:00Z",
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "eval_count": len(state.reply_tokens),
                }
            )
            self.wfile.write(b"0\r\n\r\n")

        def _chunk(self, line: dict[str, Any]) -> None:
            data = json.dumps(line).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


@contextmanager
def ollama_stand_in(state: OllamaStandIn | None = None) -> Iterator[OllamaStandIn]:
    state = state or OllamaStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
