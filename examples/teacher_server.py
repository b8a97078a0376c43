"""A stand-in teacher: an OpenAI-compatible server on 127.0.0.1 that answers the box questions of
``examples/boxes.csv`` (the built-in ``props`` world) in the DSS style, so the "your own data"
walk-through runs offline. Real teachers are served the same way (``vllm serve MODEL``, TGI,
llama.cpp's server) or hosted; ``mmi-ray rationales --base-url`` points at any of them.

    python examples/teacher_server.py --port 8765        # serves until Ctrl-C
    python examples/teacher_server.py --port 8765 --detach   # serves in the background once it listens
    python examples/teacher_server.py --write-csv examples/boxes.csv   # the dataset it knows

Tests import ``TeacherServer`` and script its faults (429, 500, slow, malformed, 401) per request.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "box-teacher"
PROPS = {"num_train": 4000, "num_valid": 40, "num_test": 40, "seed": 0, "tasks": ["props"], "teacher_error_rate": 0.0,
         "max_operand": 20, "props_boxes": 40, "props_taught": 120}
"""The world of configs/tiny_props.yaml: the same boxes, the same questions."""


def props_rows() -> dict[str, list]:
    from mmi_ray.data.builtin import builtin_splits

    p = PROPS
    s = builtin_splits(p["num_train"], p["num_valid"], p["num_test"], p["seed"], p["tasks"], p["teacher_error_rate"],
                       p["max_operand"], p["props_boxes"], p["props_taught"])
    return {name: sp.examples for name, sp in s.items()}


def knowledge() -> dict[str, str]:
    """question -> the teacher's reply: what it knows of each box, then the answer."""
    return {e.input: f"{e.rationale}. So the answer is {e.label}." for rows in props_rows().values() for e in rows}


def write_csv(path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer", "split"])
        for split, rows in props_rows().items():
            for e in rows:
                w.writerow([e.input, e.label, split])


class TeacherServer:
    """``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` on 127.0.0.1 (port 0: any free one).
    ``faults``: what the next requests get, in order (``429``, ``500``, ``401``, ``malformed``, ``slow:S``,
    ``ok``); after them, answers. ``requests`` records each request's prompt and time. ``wrong_share``:
    a noisy teacher, whose answer is wrong for that share of (prompt, seed) pairs, by a hash: the same
    request is always answered the same way, another seed (another sample) may not be."""

    def __init__(self, port: int = 0, model: str = MODEL, api_key: str | None = None, answers: dict | None = None,
                 faults: list[str] | None = None, wrong_share: float = 0.0):
        self.model, self.api_key, self.wrong_share = model, api_key, wrong_share
        self.replies: list[tuple[str, int | None, bool]] = []
        """(prompt, seed, answered wrong) of each reply sent."""
        self.answers = answers if answers is not None else knowledge()
        self.faults = list(faults or [])
        self.requests: list[tuple[float, str]] = []
        self.usage: list[tuple[int, int]] = []
        """(prompt tokens, reply tokens) of each reply sent: one token a word."""
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, code: int, body, headers=None):
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                chat = self.path.endswith("/chat/completions")
                if not chat and not self.path.endswith("/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                prompt = body["messages"][-1]["content"] if chat else body.get("prompt", "")
                with server.lock:
                    server.requests.append((time.monotonic(), prompt))
                    fault = server.faults.pop(0) if server.faults else "ok"
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                if body.get("model") != server.model:
                    return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist",
                                                      "type": "invalid_request_error", "code": "model_not_found"}})
                if fault == "429":
                    return self._send(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0.05"})
                if fault == "500":
                    return self._send(500, {"error": {"message": "internal error"}})
                if fault == "401":
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                if fault == "malformed":
                    return self._send(200, b'{"choices": [{"mess')
                if fault.startswith("slow:"):
                    time.sleep(float(fault.split(":", 1)[1]))
                wrong = server.is_wrong(prompt, body.get("seed"))
                text = server.reply(prompt, wrong)
                used = (len(prompt.split()), len(text.split()))
                with server.lock:
                    server.usage.append(used)
                    server.replies.append((prompt, body.get("seed"), wrong))
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    obj = "chat.completion"
                else:
                    choice = {"index": 0, "text": text, "finish_reason": "stop"}
                    obj = "text_completion"
                return self._send(200, {"id": "x", "object": obj, "created": 0, "model": server.model,
                                        "choices": [choice], "usage": {"prompt_tokens": used[0], "completion_tokens": used[1],
                                                                       "total_tokens": sum(used)}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def is_wrong(self, prompt: str, seed) -> bool:
        import hashlib

        h = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
        return int.from_bytes(h[:4], "big") / 2**32 < self.wrong_share

    def reply(self, prompt: str, wrong: bool = False) -> str:
        """The question is the prompt's last ``Q: ...`` before ``A:``; ``wrong``: another answer (yes
        for no, a colour for another), its working unchanged."""
        qs = re.findall(r"Q: (.*?)\nA:", prompt, flags=re.S)
        q = qs[-1].strip() if qs else prompt.strip()
        text = self.answers.get(q, "I cannot tell which box that is.")
        if wrong and (m := re.search(r"So the answer is (\w+)\.$", text)):
            swap = {"yes": "no", "no": "yes", "red": "gold", "gold": "blue", "blue": "green", "green": "red"}
            text = text[:m.start(1)] + swap.get(m.group(1), "purple") + "."
        return text

    def start(self) -> TeacherServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--write-csv", default=None, help="write the questions it knows as a CSV and exit")
    p.add_argument("--detach", action="store_true",
                   help="serve in the background: return once the port is bound (an error, such as a port in use, "
                        "shows and exits non-zero), printing the process id to stop it with")
    args = p.parse_args(argv)
    if args.write_csv:
        write_csv(args.write_csv)
        return 0
    try:
        s = TeacherServer(args.port)  # binds the port: a failure is seen here, in the foreground
    except OSError as e:
        print(f"teacher_server: cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    if args.detach:
        pid = os.fork()
        if pid:
            print(f"teacher '{s.model}' at {s.url}, in the background (stop it with: kill {pid})", flush=True)
            return 0
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    else:
        print(f"teacher '{s.model}' at {s.url} (Ctrl-C stops it)", flush=True)
    try:
        s.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
