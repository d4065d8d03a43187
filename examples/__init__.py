"""Worked examples outside the core package."""
