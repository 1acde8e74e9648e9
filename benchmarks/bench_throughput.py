"""Model throughput beside the reference implementations: seconds of audio separated per second.

One synthetic clip, one process, CPU (or --device), no_grad, eval mode. The computations of a
row take turns (--repeats rounds, in alternating order, after a warm-up round; each keeps its
fastest run), so a change of load hits both sides alike; each one's floating-point operations are counted once with
torch's FlopCounterMode (convolutions, matmuls), plus the LSTMs' matmuls counted by hooks
(FlopCounterMode does not see the fused LSTM kernels); FFTs and elementwise ops are not
counted. In the same run:

* Hybrid Demucs: this project's `HDemucs` against the demucs package's `demucs.hdemucs.HDemucs`
  (demucs 4.1.0, installed with --no-deps beside the pinned torch) with the same weights at the
  paper's settings; the largest difference of their outputs is reported too.
* Demucs: this project's Demucs v2 (config/paper.yaml's `demucs_baseline`, 64 channels) against
  the package's `demucs.demucs.Demucs`, which is the v3 "improved time Demucs" (residual
  branches, no x2 resampling): different architectures, so they are compared in GFLOP/s.
* X-UMX: this project's separation of a TF model (`Separator`: STFT, X-UMX at paper size, one
  multichannel Wiener iteration in chunks of 64 frames, ISTFT), in complex128 as the pipeline
  runs it and in complex64, against open-unmix's `Separator` with four `OpenUnmix`
  models of the same sizes (hidden 512, 3 BiLSTM layers, 1487 bins; X-UMX adds only the
  parameter-free bridges) and `niter=1`, which filters in the input's precision (float32).
  openunmix 1.3.0 imports torchaudio at import time, and no torchaudio loads beside this torch:
  its model, filtering and transforms modules are loaded with an empty `torchaudio` module
  standing in (they call nothing of it with the torch STFT backend). asteroid's X-UMX is not
  run: asteroid 0.7.0 disables its XUMX class under torch 2.

Ratio = this project's audio s/s over the reference's (>= 1: not slower). Run on demand:
    .venv/bin/python benchmarks/bench_throughput.py --help
Writes benchmarks/out/bench_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import (OUT_DIR, best_time, context_line, finish_context, markdown_table,
                    max_rss_mib, run_context, save_results, synthetic_stems)
from dannasep.constants import SAMPLE_RATE, SOURCES
from dannasep.models import PAPER_KWARGS, TINY_KWARGS, build_model
from dannasep.separation.separator import Separator

OPENUNMIX_NOTE = ("openunmix imports torchaudio at import time; loaded with an empty torchaudio "
                  "stand-in (its torch-STFT path does not use it)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lstm_flops(lstm: torch.nn.LSTM, inputs) -> int:
    """Multiply-adds x 2 of one LSTM call: per step, layer and direction, the four gates'
    [input, hidden] x hidden matmul (FlopCounterMode does not see the fused CPU/cuDNN LSTM)."""
    x = inputs[0]
    steps, batch = (x.shape[1], x.shape[0]) if lstm.batch_first else (x.shape[0], x.shape[1])
    if x.dim() == 2:  # unbatched
        steps, batch = x.shape[0], 1
    directions = 2 if lstm.bidirectional else 1
    total, size = 0, lstm.input_size
    for _ in range(lstm.num_layers):
        total += directions * steps * batch * 2 * 4 * lstm.hidden_size * (size + lstm.hidden_size)
        size = directions * lstm.hidden_size
    return total


def count_flops(module: torch.nn.Module, mix: torch.Tensor) -> int:
    """FLOPs of module(mix): FlopCounterMode's count plus the LSTMs' (counted by hooks)."""
    extra = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: extra.append(lstm_flops(m, inputs)))
             for m in module.modules() if isinstance(m, torch.nn.LSTM)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(mix)
    finally:
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops() + sum(extra)


def measure(modules: dict, mix: torch.Tensor, repeats: int, device: torch.device) -> dict:
    """Per name: audio s/s, GFLOP and GFLOP/s of module(mix).

    The modules take turns (one run each, `repeats` rounds in alternating order, after a warm-up
    round) and each keeps its fastest run, so a change of load on the shared machine hits every
    side alike.
    """
    modules = {name: module.eval().to(device) for name, module in modules.items()}

    @torch.no_grad()
    def run(module):
        out = module(mix)
        synchronize(device)
        return out

    outputs = {name: run(module) for name, module in modules.items()}  # warm-up
    best = dict.fromkeys(modules, float("inf"))
    order = list(modules.items())
    for _ in range(repeats):
        for name, module in order:
            seconds, _ = best_time(lambda: run(module), 1)
            best[name] = min(best[name], seconds)
        order.reverse()  # the first of a round runs slower here: nobody is always first
    audio = mix.shape[-1] / SAMPLE_RATE
    results = {}
    for name, module in modules.items():
        flops = count_flops(module, mix)
        seconds = best[name]
        print(f"  {name}: {seconds:.2f} s for {audio:.1f} s of audio = {audio / seconds:.2f} audio "
              f"s/s, {flops / 1e9:.1f} GFLOP, {flops / 1e9 / seconds:.1f} GFLOP/s", flush=True)
        results[name] = {"name": name, "seconds": seconds, "audio_s_per_s": audio / seconds,
                         "gflop": flops / 1e9, "gflop_per_s": flops / 1e9 / seconds,
                         "output": outputs[name].float().cpu()}
    return results


def pair_row(computation: str, ours: dict, ref: dict | None, compare: str, note: str = "",
             same_weights: bool = False) -> dict:
    row = {"computation": computation, "ours": {k: v for k, v in ours.items() if k != "output"},
           "compare": compare, "note": note}
    if ref is None:
        return row
    row["reference"] = {k: v for k, v in ref.items() if k != "output"}
    row["ratio_audio_s_per_s"] = ours["audio_s_per_s"] / ref["audio_s_per_s"]
    row["ratio_gflop_per_s"] = ours["gflop_per_s"] / ref["gflop_per_s"]
    if same_weights:
        row["max_abs_diff"] = float((ours["output"] - ref["output"]).abs().max())
    return row


def hybrid_demucs(mix, size, repeats, device) -> dict:
    from demucs.hdemucs import HDemucs as ReferenceHDemucs

    kwargs = dict(PAPER_KWARGS["hdemucs"] if size == "paper" else TINY_KWARGS["hdemucs"])
    torch.manual_seed(0)
    reference = ReferenceHDemucs(sources=list(SOURCES), audio_channels=kwargs.pop("nb_channels", 2),
                                 **kwargs)
    ours = build_model("hdemucs", **(PAPER_KWARGS["hdemucs"] if size == "paper" else TINY_KWARGS["hdemucs"]))
    ours.load_state_dict(reference.state_dict())
    got = measure({"ours HDemucs": ours, "demucs.hdemucs.HDemucs": reference}, mix, repeats, device)
    return pair_row("Hybrid Demucs", got["ours HDemucs"], got["demucs.hdemucs.HDemucs"],
                    "audio s/s", "same weights", same_weights=True)


def demucs_time_domain(mix, size, repeats, device) -> dict:
    from demucs.demucs import Demucs as ReferenceDemucs

    if size == "paper":
        ours_kwargs = dict(PAPER_KWARGS["demucs_baseline_64"])
        reference_kwargs = {}  # the package's defaults: 64 channels, v3 residual branches
    else:
        ours_kwargs = dict(TINY_KWARGS["demucs_baseline"])
        reference_kwargs = dict(channels=8, depth=4)
    torch.manual_seed(0)
    ours = build_model("demucs", **ours_kwargs)
    reference = ReferenceDemucs(sources=list(SOURCES), **reference_kwargs)
    got = measure({"ours Demucs v2": ours, "demucs.demucs.Demucs (v3)": reference}, mix, repeats,
                  device)
    return pair_row("Demucs (v2 ours, v3 `Demucs` of the package)", got["ours Demucs v2"],
                    got["demucs.demucs.Demucs (v3)"], "GFLOP/s",
                    "different architectures: compare GFLOP/s")


def load_openunmix():
    """openunmix's model module without its package __init__ (which imports torchaudio)."""
    try:
        import torchaudio  # noqa: F401  (if one ever loads here, use it)
    except Exception:  # noqa: BLE001 - any failure to load it
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    spec = importlib.util.find_spec("openunmix")
    if spec is None:
        raise ImportError("openunmix is not installed (pip install --no-deps openunmix==1.3.0)")
    package = types.ModuleType("openunmix")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("openunmix", package)
    return importlib.import_module("openunmix.model")


def xumx_separation(mix, size, repeats, device) -> list[dict]:
    kwargs = PAPER_KWARGS["xumx"] if size == "paper" else dict(PAPER_KWARGS["xumx"], **TINY_KWARGS["xumx"])
    torch.manual_seed(0)
    xumx = build_model("xumx", **kwargs)
    modules = {"ours X-UMX + MWF complex128": Separator(xumx, 1, wiener_dtype=torch.float64),
               "ours X-UMX + MWF complex64": Separator(xumx, 1, wiener_dtype=torch.float32)}
    try:
        umx = load_openunmix()
    except ImportError as exc:
        print(f"  open-unmix: not run ({exc})")
        got = measure(modules, mix, repeats, device)
        return [pair_row("X-UMX separation (complex128 MWF)", got["ours X-UMX + MWF complex128"],
                         None, "audio s/s", str(exc))]
    targets = {src: umx.OpenUnmix(nb_bins=kwargs["n_fft"] // 2 + 1, nb_channels=2,
                                  hidden_size=kwargs["hidden_size"], nb_layers=kwargs["nb_layers"],
                                  max_bin=kwargs["max_bin"], unidirectional=False)
               for src in SOURCES}
    reference = "openunmix Separator (4 x OpenUnmix, niter 1)"
    modules[reference] = umx.Separator(targets, niter=1, n_fft=kwargs["n_fft"],
                                       n_hop=kwargs["hop_length"], nb_channels=2,
                                       wiener_win_len=300, filterbank="torch")
    got = measure(modules, mix, repeats, device)
    return [pair_row("X-UMX separation, MWF in complex128 (the pipeline's)",
                     got["ours X-UMX + MWF complex128"], got[reference], "audio s/s",
                     OPENUNMIX_NOTE + "; open-unmix filters in float32"),
            pair_row("X-UMX separation, MWF in complex64", got["ours X-UMX + MWF complex64"],
                     got[reference], "audio s/s", OPENUNMIX_NOTE)]


def markdown(result: dict) -> str:
    headers = ["computation", "ours audio s/s", "reference audio s/s", "ratio (audio s/s)",
               "ours GFLOP/s", "reference GFLOP/s", "ratio (GFLOP/s)", "max abs diff", "note"]
    rows = []
    for r in result["rows"]:
        ref = r.get("reference")
        rows.append([r["computation"], f"{r['ours']['audio_s_per_s']:.2f}",
                     f"{ref['audio_s_per_s']:.2f}" if ref else "-",
                     f"{r['ratio_audio_s_per_s']:.2f}" if ref else "-",
                     f"{r['ours']['gflop_per_s']:.1f}", f"{ref['gflop_per_s']:.1f}" if ref else "-",
                     f"{r['ratio_gflop_per_s']:.2f}" if ref else "-",
                     f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-", r["note"]])
    lines = [f"# Separation throughput beside the reference implementations ({result['size']} size)",
             "", context_line(result["context"]),
             f"Clip: {result['seconds']} s synthetic stereo mixture, batch 1; the computations "
             f"of a row take turns, fastest of {result['repeats']} rounds after a warm-up round; "
             "GFLOP: torch's FlopCounterMode plus the LSTMs' matmuls (FFTs and elementwise ops "
             "not counted). Ratio: ours / reference (>= 1: ours not slower).", ""]
    lines += markdown_table(headers, rows, [False] + [True] * 7 + [False])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--size", choices=("paper", "tiny"), default="paper",
                        help="models at the paper's settings (default) or the embedded default's")
    parser.add_argument("--only", nargs="+", choices=("hdemucs", "demucs", "xumx"),
                        default=["hdemucs", "demucs", "xumx"])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs each (fastest kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        parser.error("--seconds must be positive and --repeats >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    context = run_context(args.threads, str(device))
    mixture = synthetic_stems(args.seconds, seed=0)["mixture"]
    mix = torch.from_numpy(np.ascontiguousarray(mixture.T))[None].to(device)
    print(f"{args.seconds} s clip, {args.size} size, {args.threads} threads, device {device}", flush=True)
    rows = []
    benches = {"hdemucs": hybrid_demucs, "demucs": demucs_time_domain, "xumx": xumx_separation}
    for name in args.only:
        try:
            got = benches[name](mix, args.size, args.repeats, device)
        except ImportError as exc:
            print(f"{name}: reference not installed ({exc}); skipped", flush=True)
            continue
        rows += got if isinstance(got, list) else [got]
    result = {"context": finish_context(context), "seconds": args.seconds, "size": args.size,
              "repeats": args.repeats, "rows": rows, "max_rss_mib": max_rss_mib()}
    table = markdown(result)
    print(table)
    save_results(args.out, "bench_throughput", result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
