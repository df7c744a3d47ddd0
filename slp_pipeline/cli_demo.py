"""``slp demo``: the main job."""
