"""Triton Python-backend model: runs an exported ONNX graph with ONNX Runtime on CPU.

This is the CPU profile's stand-in for a TensorRT engine: the same graph, the same
uint8 NHWC input, the same output. Triton hands ``execute`` every request the dynamic
batcher grouped; they are concatenated and run as one ORT batch, which is what makes
server-side batching pay off.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = int(params.get("inter_op_threads", "1"))
        # Spinning workers burn the cores the transformer needs to decode images.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's arena keeps every block it ever grew to for any batch size the dynamic
        # batcher formed: a 10-minute soak saw the NSFW stub creep +50 MB. Without it,
        # buffers go back to malloc, which the server's environment keeps from hoarding.
        options.enable_cpu_mem_arena = False
        onnx_path = Path(args["model_repository"]) / args["model_version"] / params["onnx_file"]
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {onnx_path.name} on onnxruntime {ort.__version__}, "
            f"intra_op_threads={options.intra_op_num_threads}, python={sys.executable}"
        )

    def execute(self, requests):
        arrays = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            for request in requests
        ]
        try:
            batch = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            scores = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as exc:  # noqa: BLE001 - report to every waiting client
            error = pb_utils.TritonError(f"onnxruntime failed: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        start = 0
        for array in arrays:
            stop = start + len(array)
            tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(scores[start:stop]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start = stop
        return responses

    def finalize(self):
        self.session = None
