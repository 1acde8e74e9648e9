"""The ONNX X-UMX's initializers in the TorchScript file's layout (then imported like xumx_mwf).

torch.onnx.export (the TorchScript-based exporter the authors' 2022 file came from) renames
every weight (`onnx::Conv_1274`, `onnx::LSTM_1333`, ...), folds each BatchNorm into the conv
before it and turns each LSTM layer into an ONNX `LSTM` node, so names say nothing and the graph
is read by its structure instead (the authors' X_UMX.forward, model/x_umx.py):

  the first Add / Mul with a constant of 4 x bins values     input_means, input_scale
  the last Mul / Add with a constant                         output_scale, output_means
  the three Conv nodes, in graph order                       affine1.0, affine2.0, affine2.3, each
                                                             with its BatchNorm (affine1.1,
                                                             affine2.1, affine2.4): a following
                                                             BatchNormalization node, or, folded,
                                                             the identity with the conv's bias
  LSTM nodes chained through Transpose/Reshape               {bass,drums,other,vocals}_lstm, one
                                                             chain per source in the order forward
                                                             calls them (their outputs are
                                                             averaged, so the order cannot change
                                                             the masks); ONNX gates (i, o, f, c)
                                                             back to torch's (i, f, g, o)

A file with another structure is refused, naming what was not found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .released_layouts import XUMX_LSTM_ORDER

FIX = "fetch xumx.onnx again (`dannasep fetch danna-sep-weights`)"
_PASS_THROUGH = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast")
_TORCH_GATES = [0, 2, 3, 1]  # ONNX blocks (i, o, f, c) -> torch (i, f, g, o)
BN_EPS = 1e-5


class _Graph:
    def __init__(self, path: Path):
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf DecodeError and friends
            raise DataError(f"{path}: not an ONNX model ({exc}); {FIX}") from None
        self.path = path
        self.nodes = list(model.graph.node)
        self.values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.values[node.output[0]] = numpy_helper.to_array(attr.t)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def constant(self, name: str):
        """(values, initializer names) of a constant input, through reshapes; None otherwise."""
        if name in self.values:
            return self.values[name], [name]
        node = self.producer.get(name)
        if node is not None and node.op_type in _PASS_THROUGH:
            found = self.constant(node.input[0])
            if found is not None:
                return found[0].reshape(-1), found[1]
        return None

    def names(self, name: str) -> list[str]:
        """The initializer names a constant input comes from ([] when it is not one)."""
        found = self.constant(name) if name else None
        return found[1] if found is not None else []

    def need(self, name: str, what: str) -> np.ndarray:
        found = self.constant(name) if name else None
        if found is None:
            raise DataError(f"{self.path}: {what} is not a constant of the graph; {FIX}")
        return found[0]

    def attribute(self, node, name, default=None):
        from onnx import helper

        for attr in node.attribute:
            if attr.name == name:
                return helper.get_attribute_value(attr)
        return default


def _conv_and_norm(graph: _Graph, conv, conv_prefix: str, norm_prefix: str, state: dict,
                   sources: dict) -> None:
    """A Conv and its BatchNorm (a node of its own, or folded into the conv) as TorchScript keys."""
    weight = graph.need(conv.input[1], f"the weight of Conv {conv.name}")
    bias = graph.need(conv.input[2], f"the bias of Conv {conv.name}") if len(conv.input) > 2 and conv.input[2] \
        else np.zeros(weight.shape[0], dtype=weight.dtype)
    state[f"{conv_prefix}.weight"] = torch.from_numpy(weight.copy())
    sources[f"{conv_prefix}.weight"] = graph.names(conv.input[1])
    following = graph.consumers.get(conv.output[0], [])
    norm = following[0] if len(following) == 1 and following[0].op_type == "BatchNormalization" else None
    if norm is not None:
        names = ("weight", "bias", "running_mean", "running_var")
        for name, value in zip(names, norm.input[1:5]):
            state[f"{norm_prefix}.{name}"] = torch.from_numpy(graph.need(value, f"{name} of {norm.name}").copy())
            sources[f"{norm_prefix}.{name}"] = graph.names(value)
        state[f"{norm_prefix}.running_mean"] -= torch.from_numpy(bias)  # a conv bias before the BN
        eps = graph.attribute(norm, "epsilon", BN_EPS)
        if abs(eps - BN_EPS) > 1e-9:
            raise DataError(f"{graph.path}: BatchNormalization epsilon {eps}, expected {BN_EPS}; {FIX}")
    else:  # folded: identity BN (1 / sqrt(running_var + eps) == 1) that adds the conv's bias
        n = weight.shape[0]
        state[f"{norm_prefix}.weight"] = torch.ones(n)
        state[f"{norm_prefix}.bias"] = torch.from_numpy(bias.copy())
        state[f"{norm_prefix}.running_mean"] = torch.zeros(n)
        state[f"{norm_prefix}.running_var"] = torch.full((n,), 1 - BN_EPS)
        sources[f"{norm_prefix}.bias"] = graph.names(conv.input[2]) if len(conv.input) > 2 else []
    state[f"{norm_prefix}.num_batches_tracked"] = torch.tensor(0)


def _lstm_chains(graph: _Graph) -> list[list]:
    lstms = [n for n in graph.nodes if n.op_type == "LSTM"]
    parent = {}
    for node in lstms:
        name = node.input[0]
        for _ in range(6):
            producer = graph.producer.get(name)
            if producer is None:
                break
            if producer.op_type == "LSTM":
                parent[id(node)] = producer
                break
            if producer.op_type not in _PASS_THROUGH:
                break
            name = producer.input[0]
    children = {id(p): n for n in lstms for p in [parent.get(id(n))] if p is not None}
    chains = []
    for node in lstms:
        if id(node) in parent:
            continue
        chain = [node]
        while id(chain[-1]) in children:
            chain.append(children[id(chain[-1])])
        chains.append(chain)
    return chains


def _lstm_layer(graph: _Graph, node, src: str, layer: int, state: dict, sources: dict) -> None:
    direction = graph.attribute(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    hidden = graph.attribute(node, "hidden_size")
    w = graph.need(node.input[1], f"W of LSTM {node.name}")
    r = graph.need(node.input[2], f"R of LSTM {node.name}")
    b = graph.need(node.input[3], f"B of LSTM {node.name}") if len(node.input) > 3 and node.input[3] \
        else np.zeros((w.shape[0], 8 * hidden), dtype=w.dtype)
    w, r, b = w.reshape(-1, 4 * hidden, w.shape[-1]), r.reshape(-1, 4 * hidden, hidden), b.reshape(-1, 8 * hidden)

    def gates(t):  # [4 * hidden, ...] in ONNX order -> torch order
        blocks = np.split(t, 4, axis=0)
        return torch.from_numpy(np.concatenate([blocks[i] for i in _TORCH_GATES], axis=0).copy())

    suffixes = ("", "_reverse") if direction == "bidirectional" else ("",)
    for d, suffix in enumerate(suffixes):
        key = f"{src}_lstm.%s_l{layer}{suffix}"
        state[key % "weight_ih"] = gates(w[d])
        state[key % "weight_hh"] = gates(r[d])
        state[key % "bias_ih"] = gates(b[d, :4 * hidden])
        state[key % "bias_hh"] = gates(b[d, 4 * hidden:])
        for part, onnx_input in (("weight_ih", 1), ("weight_hh", 2), ("bias_ih", 3), ("bias_hh", 3)):
            sources[key % part] = graph.names(node.input[onnx_input]) if len(node.input) > onnx_input else []


def onnx_xumx_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """(state dict in the xumx_mwf TorchScript layout, TorchScript key -> ONNX initializer names)."""
    graph = _Graph(Path(path))
    state: dict[str, torch.Tensor] = {}
    sources: dict[str, list[str]] = {}

    affine = []
    for node in graph.nodes:
        if node.op_type in ("Add", "Mul"):
            found = next((graph.constant(i) for i in node.input if graph.constant(i) is not None), None)
            if found is not None and found[0].size > 1:
                affine.append((node.op_type, found))
    adds = [f for op, f in affine if op == "Add"]
    muls = [f for op, f in affine if op == "Mul"]
    if len(adds) < 2 or len(muls) < 2:
        raise DataError(f"{path}: expected X-UMX's input and output scaling (two Add and two Mul "
                        f"nodes with constants), found {len(adds)} and {len(muls)}; {FIX}")
    for key, (values, names) in (("input_means", adds[0]), ("input_scale", muls[0]),
                                 ("output_scale", muls[-1]), ("output_means", adds[-1])):
        state[key] = torch.from_numpy(values.reshape(-1).copy())
        sources[key] = names

    convs = [n for n in graph.nodes if n.op_type == "Conv"]
    if len(convs) != 3:
        raise DataError(f"{path}: expected X-UMX's three Conv nodes (affine1, affine2), found "
                        f"{len(convs)}; {FIX}")
    for conv, (conv_prefix, norm_prefix) in zip(convs, (("affine1.0", "affine1.1"), ("affine2.0", "affine2.1"),
                                                        ("affine2.3", "affine2.4"))):
        _conv_and_norm(graph, conv, conv_prefix, norm_prefix, state, sources)

    chains = _lstm_chains(graph)
    if len(chains) != len(XUMX_LSTM_ORDER) or len({len(c) for c in chains}) != 1:
        raise DataError(f"{path}: expected four equal chains of LSTM layers (one per source), "
                        f"found chains of {[len(c) for c in chains]} layers; {FIX}")
    for src, chain in zip(XUMX_LSTM_ORDER, chains):
        for layer, node in enumerate(chain):
            _lstm_layer(graph, node, src, layer, state, sources)
    return state, sources
