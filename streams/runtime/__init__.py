"""Faust glue of the stream processors: the tier app, the eager transport, ordered acks."""
