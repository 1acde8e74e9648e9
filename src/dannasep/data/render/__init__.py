"""A MUSDB18-HQ-shaped dataset rendered from sampled instruments (`dannasep render`).

arrangement  the song plan: style, tempo, key and mode, chords, form, instruments
parts        drums, bass and other as General MIDI parts (pretty_midi), humanised
melody       the lead vocal line: phrases and gaps, syllables, pitch bends, breaths
rendering    FluidSynth with the pinned SoundFont, all stems in one deterministic pass
voice        espeak-ng syllables shaped onto the sampled voice; consonants and breaths
production   EQ, compression, reverb, stereo placement, loudness balance, int16 mixture
track        one track from seed to int16 stems
cli          the dataset on disk, atomically
"""
