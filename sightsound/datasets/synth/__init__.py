"""The synthetic audio-visual world: its generator (`world`), its reader (`reader`) and its ground
truth as a watcher and a listener would tell it (`oracle`)."""
