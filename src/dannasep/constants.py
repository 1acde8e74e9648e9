"""Names and numbers shared by every step."""

SAMPLE_RATE = 44100
CHANNELS = 2
# Source order everywhere (models, losses, tables): as in the Danna-Sep code.
SOURCES = ("drums", "bass", "other", "vocals")
STEMS = ("mixture",) + SOURCES
SUBSETS = ("train", "test")
