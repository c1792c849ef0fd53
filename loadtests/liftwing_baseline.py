"""Today's Lift Wing logo-detection server, re-implemented from its public description.

This module reproduces the parts that cost time, so the
benchmark compares serving designs rather than models: one process, one blocking
worker, no batching across requests, every image written to a temporary directory and
read back, stretched to 224×224 without keeping the aspect ratio (Keras ``load_img``,
nearest-neighbour), one model call per image, results sorted by file name. It runs the
same exported ONNX model our Triton serves, with the same thread count. Unlike the
original it does not use the client's file name as a path (that would be a path
traversal hole); the temp file gets a fixed name, which costs the same.
"""

from __future__ import annotations

import base64
import json
import tempfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import onnxruntime as ort
import typer
from PIL import Image

from preprocessing.specs import ONNX_FILENAME, SPECS


class _Handler(BaseHTTPRequestHandler):
    sessions: dict[str, ort.InferenceSession] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._reply(200, {"ready": True})

    def do_POST(self) -> None:  # noqa: N802
        name = self.path.removeprefix("/v1/models/").removesuffix(":predict")
        session = self.sessions.get(name)
        if session is None:
            self._reply(404, {"error": f"model {name} not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        predictions = []
        with tempfile.TemporaryDirectory() as tmp:
            for instance in body["instances"]:
                path = Path(tmp) / "upload"
                path.write_bytes(base64.b64decode(instance["image"]))
                img = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.NEAREST)
                batch = np.asarray(img, dtype=np.uint8)[np.newaxis]
                scores = session.run(None, {session.get_inputs()[0].name: batch})[0][0]
                predictions.append(
                    {
                        "filename": instance.get("filename", ""),
                        "target": instance.get("target", "logo"),
                        "prediction": float(scores[1]),
                        "out_of_domain": float(scores[0]),
                    }
                )
        predictions.sort(key=lambda p: p["filename"])
        self._reply(200, {"predictions": predictions})

    def _reply(self, status: int, content: dict) -> None:
        data = json.dumps(content).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        # One connection at a time: closing it lets the next queued client in.
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


def main(
    model_repository: Path = typer.Option(Path("model_repository")),
    port: int = typer.Option(8090),
    threads: int = typer.Option(2, help="ORT intra-op threads, as our Triton models use."),
) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for spec in SPECS:
        path = model_repository / spec.name / str(spec.version) / ONNX_FILENAME
        _Handler.sessions[spec.name] = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    # HTTPServer, not ThreadingHTTPServer: one request at a time, like one blocking worker;
    # waiting clients queue in the listen backlog, sized like uvicorn's.
    HTTPServer.request_queue_size = 2048
    server = HTTPServer(("127.0.0.1", port), _Handler)
    print(f"lift-wing-style baseline on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    typer.run(main)
