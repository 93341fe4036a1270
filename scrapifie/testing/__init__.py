"""Helpers the test suites and the bench share; the services never import them."""
