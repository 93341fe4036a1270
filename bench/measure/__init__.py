"""Timing, CPU and memory readers, progress output and profilers the suites share."""
