"""A finished run as a model to use: load it from its checkpoint, feed it files, or run its export."""
