"""Parameter counts of Sony's D3Net for music source separation, from the authors' own code.

Not a test: the figures in tests/test_models_xd3net.py come from this script. It runs
sony/ai-research-code's d3net/music-source-separation/model.py (and d3net/d3net_basic_blocks.py)
with each configs/<source>.yaml on a [1, 352, 2, 2049] input. nnabla publishes wheels up to
Python 3.10 only, so the model runs on a shape-only stand-in for the nnabla functions it calls
(written below into a temporary folder): it follows tensor shapes and records every parameter by
its scoped name, get-or-create as nnabla does, so the count is what `nn.get_parameters()` would
give (BatchNorm running statistics are not trainable and not counted).

    python tests/reference/sony_d3net_counts.py /path/to/ai-research-code [shapes.json]
"""

import json
import sys
import tempfile
import textwrap
from pathlib import Path

STAND_IN = {
    "__init__.py": '''
        import contextlib
        import numpy as np
        __version__ = "1.39.0"
        _scope, _params = [], {}

        class Variable:
            def __init__(self, shape):
                self.shape = tuple(int(s) for s in shape)
            def apply(self, **kw):
                return self
            def __getitem__(self, key):
                key = key if isinstance(key, tuple) else (key,)
                shape = list(self.shape)
                if key and key[0] is Ellipsis:
                    key = (slice(None),) * (len(shape) - len(key) + 1) + key[1:]
                for axis, k in enumerate(key):
                    shape[axis] = len(range(*k.indices(shape[axis])))
                return Variable(shape)
            def _binary(self, other):
                other = other.shape if isinstance(other, Variable) else ()
                return Variable(np.broadcast_shapes(self.shape, other))
            __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _binary
            __truediv__ = __pow__ = __iadd__ = _binary

        @contextlib.contextmanager
        def parameter_scope(name):
            _scope.append(name)
            try:
                yield
            finally:
                _scope.pop()

        def _create(name, shape, need_grad=True):
            full = "/".join(_scope + [name])
            shape = tuple(int(s) for s in shape)
            assert _params.setdefault(full, (shape, need_grad))[0] == shape, full
            return Variable(shape)

        def get_parameters(grad_only=True):
            return {k: v[0] for k, v in _params.items() if v[1] or not grad_only}
        ''',
    "parameter.py": '''
        from . import _create
        def get_parameter_or_create(name, shape=None, initializer=None, need_grad=True, **kw):
            return _create(name, shape, need_grad)
        ''',
    "initializer.py": '''
        def calc_normal_std_glorot(*args, **kw):
            return 1.0
        class NormalInitializer:
            def __init__(self, *args, **kw):
                pass
        ConstantInitializer = NormalInitializer
        ''',
    "functions.py": '''
        from . import Variable
        def relu(x, inplace=False):
            return Variable(x.shape)
        sigmoid = relu
        def concatenate(*xs, axis=None):
            shape = list(xs[0].shape)
            shape[axis] = sum(x.shape[axis] for x in xs)
            return Variable(shape)
        def transpose(x, axes):
            return Variable([x.shape[a] for a in axes])
        def average_pooling(x, kernel, stride=None, **kw):
            b, c, h, w = x.shape
            return Variable((b, c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1))
        ''',
    "parametric_functions.py": '''
        from . import Variable, _create, parameter_scope
        def convolution(x, outmaps, kernel, pad=(0, 0), stride=(1, 1), dilation=(1, 1),
                        with_bias=True, name=None, **kw):
            with parameter_scope(name):
                _create("conv/W", (outmaps, x.shape[1]) + tuple(kernel))
                if with_bias:
                    _create("conv/b", (outmaps,))
            size = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                    for n, p, d, k, s in zip(x.shape[2:], pad, dilation, kernel, stride)]
            return Variable((x.shape[0], outmaps, *size))
        def deconvolution(x, outmaps, kernel, stride=(1, 1), with_bias=True, name=None, **kw):
            with parameter_scope(name):
                _create("deconv/W", (x.shape[1], outmaps) + tuple(kernel))
                if with_bias:
                    _create("deconv/b", (outmaps,))
            size = [(n - 1) * s + k for n, k, s in zip(x.shape[2:], kernel, stride)]
            return Variable((x.shape[0], outmaps, *size))
        def batch_normalization(x, axes=(1,), name=None, **kw):
            shape = tuple(n if a in axes else 1 for a, n in enumerate(x.shape))
            with parameter_scope(name):
                for key, trainable in (("beta", True), ("gamma", True), ("mean", False), ("var", False)):
                    _create("bn/" + key, shape, trainable)
            return Variable(x.shape)
        sync_batch_normalization = batch_normalization
        ''',
}


def main(repo: str, shapes_out: str | None = None) -> None:
    import numpy as np
    import yaml

    stand_in = Path(tempfile.mkdtemp()) / "nnabla"
    stand_in.mkdir()
    for name, text in STAND_IN.items():
        (stand_in / name).write_text(textwrap.dedent(text))
    mss = Path(repo) / "d3net" / "music-source-separation"
    sys.path[:0] = [str(stand_in.parent), str(mss), str(mss.parent)]
    import nnabla as nn
    from model import D3NetMSS

    counts, shapes = {}, {}
    for target in ("drums", "bass", "other", "vocals"):
        nn._params.clear()
        hparams = yaml.safe_load((mss / "configs" / f"{target}.yaml").read_text())
        with nn.parameter_scope(target):
            net = D3NetMSS(hparams, input_mean=np.zeros(2049), input_scale=np.ones(2049))
            net(nn.Variable((1, 352, hparams["n_channels"], hparams["fft_size"] // 2 + 1)))
        params = nn.get_parameters()
        counts[target] = {"parameters": int(sum(np.prod(s) for s in params.values())),
                          "tensors": len(params)}
        shapes[target] = {k: list(v) for k, v in params.items()}
    print(json.dumps(counts, indent=1))
    if shapes_out:
        Path(shapes_out).write_text(json.dumps(shapes))


if __name__ == "__main__":
    main(*sys.argv[1:])
