"""Checking teacher traces against the audio: the verify stage's checkers (`checkers`) and the
lightweight audio–text verifier trained on a calibration set (`verifier`)."""
