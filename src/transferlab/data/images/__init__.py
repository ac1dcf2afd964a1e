"""Image inputs: decoding files, where images wait (memory or LitData chunks), per-batch transforms, strong views, corruptions."""
