"""Learned routing of ``tier: auto`` jobs: the routing memory (learned.py), the router process."""
