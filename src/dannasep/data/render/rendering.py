"""FluidSynth renders General MIDI parts with a SoundFont pinned by sha256.

Determinism: FluidSynth's reverb and chorus are off (the production adds its own), it runs
on one thread (`synth.cpu-cores` 1), writes float samples (its 16-bit output adds dither),
and every track gets a fresh synthesizer, so no voice, controller or 64-sample block cursor
carries over from what was rendered before (a reused synthesizer, even after a system reset,
was measured to give different samples). A second synthesizer holds the SoundFont for the
whole process, so FluidSynth's sample cache makes each fresh load cheap.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import numpy as np
import pretty_midi

from ...constants import SAMPLE_RATE
from ...errors import DataError
from ...io import sha256_file

log = logging.getLogger(__name__)
# FluidR3_GM.sf2 of Debian's fluid-soundfont-gm 3.1 (bookworm's 3.1-5.3 and later).
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FLUIDR3_GM_SHA256 = "74594e8f4250680adf590507a306655a299935343583256f3b722c48a1bc1cb0"
DRUM_CHANNEL = 9  # MIDI channel 10
DRUM_BANK = 128
SYNTH_SETTINGS = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1,
                  "synth.polyphony": 256, "synth.dynamic-sample-loading": 0}
SYNTH_GAIN = 0.5
INSTALL_HINT = "install Debian's fluid-soundfont-gm (make setup does) or set dataset.rendered.soundfont"


def check_soundfont(path: str | Path, sha256: str | None) -> Path:
    """The SoundFont file, after checking it exists and has the pinned sha256."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SoundFont {path} not found; {INSTALL_HINT}")
    if sha256:
        actual = sha256_file(path)
        if actual != sha256:
            raise DataError(
                f"SoundFont {path} has sha256 {actual}, expected {sha256} (FluidR3_GM of Debian's "
                f"fluid-soundfont-gm); {INSTALL_HINT}, or set dataset.rendered.soundfont_sha256 to "
                f"{actual} to render with this one (the dataset then differs)")
    return path


def load_fluidsynth():
    try:
        import fluidsynth
    except (ImportError, OSError) as exc:
        raise DataError(f"cannot load the FluidSynth library ({exc}); install Debian's fluidsynth "
                        "(make setup does) and the pyfluidsynth package") from None
    return fluidsynth


class SoundFontRenderer:
    """Renders stems (lists of pretty_midi Instruments) to stereo float32 (samples, 2) each.

    All stems of a track play on one synthesizer in one pass: FluidSynth mixes the MIDI
    channels of audio group g (channel % groups == g) into stereo output g, so each stem gets
    its own channels, drums on channel 10 (group 1 of 4).
    """

    def __init__(self, soundfont: str | Path):
        self._fs = load_fluidsynth()
        self.soundfont = str(soundfont)
        pointer = ctypes.c_void_p
        self._nwrite_float = self._fs.cfunc(
            "fluid_synth_nwrite_float", ctypes.c_int, ("synth", pointer, 1), ("len", ctypes.c_int, 1),
            ("left", pointer, 1), ("right", pointer, 1), ("fx_left", pointer, 1), ("fx_right", pointer, 1))
        self._anchor = None
        self._anchor, _ = self._new_synth(1)  # keeps the samples cached while this object lives

    def _new_synth(self, groups: int):
        settings = {**SYNTH_SETTINGS, "synth.audio-channels": groups, "synth.audio-groups": groups}
        synth = self._fs.Synth(gain=SYNTH_GAIN, samplerate=float(SAMPLE_RATE), **settings)
        sfid = synth.sfload(self.soundfont)
        if sfid < 0:
            synth.delete()
            raise DataError(f"FluidSynth cannot load the SoundFont {self.soundfont}; {INSTALL_HINT}")
        return synth, sfid

    def close(self) -> None:
        if self._anchor is not None:
            self._anchor.delete()
            self._anchor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def assign_channels(stems: dict[str, list[pretty_midi.Instrument]]) -> tuple[int, dict[str, list[int]]]:
        """(groups, stem -> MIDI channels): channel c sounds in group c % groups."""
        names = list(stems)
        drum_stems = [n for n in names if any(i.is_drum for i in stems[n])]
        if len(drum_stems) > 1:
            raise ValueError(f"only one stem can hold drums, got {drum_stems}")
        groups = max(len(names), DRUM_CHANNEL % max(len(names), 1) + 1)
        group_of = {}
        if drum_stems:
            group_of[drum_stems[0]] = DRUM_CHANNEL % groups
        free = [g for g in range(groups) if g not in group_of.values()]
        for name in names:
            if name not in group_of:
                group_of[name] = free.pop(0)
        channels = {}
        for name in names:
            melodic = [c for c in range(16) if c % groups == group_of[name] and c != DRUM_CHANNEL]
            need = sum(not i.is_drum for i in stems[name])
            if need > len(melodic):
                raise ValueError(f"stem {name} has {need} melodic parts; at most {len(melodic)} fit")
            channels[name] = melodic
        return groups, channels

    def render(self, stems: dict[str, list[pretty_midi.Instrument]], n_samples: int) -> dict[str, np.ndarray]:
        groups, free_channels = self.assign_channels(stems)
        synth, sfid = self._new_synth(groups)
        try:
            events, group_of = [], {}
            for name, instruments in stems.items():
                for inst in instruments:
                    channel = DRUM_CHANNEL if inst.is_drum else free_channels[name].pop(0)
                    group_of[name] = channel % groups
                    bank = DRUM_BANK if inst.is_drum else 0
                    if synth.program_select(channel, sfid, bank, inst.program) != 0:
                        raise DataError(f"SoundFont {self.soundfont} has no preset {bank}:{inst.program}; "
                                        f"use a General MIDI SoundFont ({INSTALL_HINT})")
                    events += [(c.time, 0, synth.cc, (channel, c.number, c.value)) for c in inst.control_changes]
                    events += [(b.time, 0, synth.pitch_bend, (channel, b.pitch)) for b in inst.pitch_bends]
                    events += [(n.end, 1, synth.noteoff, (channel, n.pitch)) for n in inst.notes]
                    events += [(n.start, 2, synth.noteon, (channel, n.pitch, n.velocity)) for n in inst.notes]
            # Controls before note-offs before note-ons at the same sample; stable otherwise.
            events.sort(key=lambda e: (int(round(e[0] * SAMPLE_RATE)), e[1]))
            out = np.zeros((groups, 2, n_samples), dtype=np.float32)
            position = 0
            for time, _, action, args in events:
                sample = min(int(round(time * SAMPLE_RATE)), n_samples)
                if sample > position:
                    self._write(synth, out, position, sample)
                    position = sample
                if position >= n_samples:
                    break
                action(*args)
            if position < n_samples:
                self._write(synth, out, position, n_samples)
            return {name: out[group_of[name]].T.copy() if name in group_of else np.zeros((n_samples, 2), np.float32)
                    for name in stems}
        finally:
            synth.delete()

    def _write(self, synth, out: np.ndarray, start: int, stop: int) -> None:
        groups = out.shape[0]
        left = (ctypes.c_void_p * groups)(*(out[g, 0, start:].ctypes.data for g in range(groups)))
        right = (ctypes.c_void_p * groups)(*(out[g, 1, start:].ctypes.data for g in range(groups)))
        status = self._nwrite_float(synth.synth, stop - start, ctypes.addressof(left), ctypes.addressof(right),
                                    None, None)
        if status != 0:
            raise DataError(f"FluidSynth failed to render with {self.soundfont}")
