"""The pipeline's stages, one module each: a config dataclass and a `main(cfg)` that reads straight
down — open the stage (skip it when done), loop over records, save, write the manifest last — and a
`summary(manifest)` line for the report. Stages never import each other: they hand off through
files in the run directory. `sightsound.registry` lists them.
"""
