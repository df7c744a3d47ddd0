"""``slp data ...``: dataset generation (SynthSigner)."""
