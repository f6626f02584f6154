"""Pipeline stages. Each module has a config dataclass and a `main(cfg)` that reads straight
down: set up, loop over records, save, write the manifest last."""
