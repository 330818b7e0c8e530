"""KServe's Python ModelServer serving the same ONNX graph over the Open Inference Protocol (V2):
the peer ``bench_serve`` measures raylane's ``/v2/models/{name}/infer`` against. Runs in its own
environment (``.venv-kserve``: KServe pins its own FastAPI, uvicorn and protobuf), started by
``bench_serve``:

    .venv-kserve/bin/python benchmarks/kserve_peer.py --model_name credit --onnx model.onnx \\
        --http_port 8080 --workers 1 --enable_grpc false

The model is what a KServe user would write for a raw-column ONNX graph: one V2 input per graph
input, cast to the graph's type, the graph's outputs returned as they are.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.utils import generate_uuid

TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
         "tensor(int64)": np.int64, "tensor(string)": object}
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
             np.dtype(np.int64): "INT64", np.dtype(object): "BYTES"}


class OnnxGraph(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # as a raylane replica's session
        self.session = ort.InferenceSession(self.path, sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = {i.name: TYPES[i.type] for i in self.session.get_inputs()}
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None,
                      response_headers=None) -> InferResponse:
        feeds = {i.name: i.as_numpy().astype(self.inputs[i.name]).reshape(-1, 1)
                 for i in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        outputs = []
        for name, value in zip(names, self.session.run(names, feeds), strict=True):
            value = np.asarray(value)
            outputs.append(InferOutput(name=name, shape=list(value.shape),
                                       datatype=DATATYPES[value.dtype],
                                       data=value.tolist()))
        return InferResponse(response_id=payload.id or generate_uuid(),
                             model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--onnx", required=True)
    args, _ = parser.parse_known_args()
    ModelServer().start([OnnxGraph(args.model_name, args.onnx)])
