"""An `nn.LSTM` over a whole track's sequence, block by block, with the exact whole-sequence result.

A recurrent layer's output at a frame depends on every earlier frame (forward direction) or
every later one (backward direction), but only through its state (h, c). So each direction of
each layer runs over the sequence in blocks, forward in order and backward in reverse order,
handing its state from block to block; a layer's outputs go to a `FrameStore` that the next
layer reads. Memory: one block of one layer, whatever the sequence length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .frame_store import FrameStore


def _direction(lstm: nn.LSTM, layer: int, reverse: bool) -> nn.LSTM:
    """A one-layer, one-direction LSTM with the weights of `layer` (and direction) of `lstm`."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    input_size = lstm.input_size if layer == 0 else lstm.hidden_size * (2 if lstm.bidirectional else 1)
    single = nn.LSTM(input_size, lstm.hidden_size, num_layers=1, bias=lstm.bias)
    single.load_state_dict({name + "_l0": getattr(lstm, name + suffix)
                            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                            if hasattr(lstm, name + suffix)})
    return single.to(lstm.weight_ih_l0.device).eval()


@torch.no_grad()
def stream_lstm(lstm: nn.LSTM, source: FrameStore, block: int, scratch) -> FrameStore:
    """`lstm(sequence)[0]` for the sequence in `source` [frames, batch, input] (eval mode).

    Returns a new FrameStore [frames, batch, hidden * directions] under `scratch`; `source` is
    left as it was.
    """
    if lstm.batch_first or getattr(lstm, "proj_size", 0):
        raise ValueError("stream_lstm supports sequence-first LSTMs without projections")
    device = lstm.weight_ih_l0.device
    directions = 2 if lstm.bidirectional else 1
    frames, batch = source.rows, source.row_shape[0]
    h = lstm.hidden_size
    current = source
    for layer in range(lstm.num_layers):
        out = FrameStore(scratch, frames, (batch, lstm.hidden_size * directions))
        for d in range(directions):
            cell = _direction(lstm, layer, reverse=d == 1)
            starts = list(range(0, frames, block))
            state = None
            for start in (reversed(starts) if d == 1 else starts):
                stop = min(start + block, frames)
                x = torch.from_numpy(current.read(start, stop)).to(device)
                if d == 1:
                    x = x.flip(0)
                y, state = cell(x, state)
                if d == 1:
                    y = y.flip(0)
                # both directions share the output rows: the backward pass fills in its half
                rows = (np.zeros((stop - start, batch, h * directions), dtype=np.float32)
                        if d == 0 else out.read(start, stop))
                rows[..., d * h:(d + 1) * h] = y.cpu().numpy()
                out.write(start, rows)
        if current is not source:
            current.close()
        current = out
    return current
