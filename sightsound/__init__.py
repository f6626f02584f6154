"""sightsound: an open implementation of SightSound-R1 (cross-modal reasoning distillation from a
vision-language teacher to an audio-language student). See README.md and `sightsound --help`."""

__version__ = "0.1.0"
