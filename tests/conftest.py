"""Shared fixtures. Each section belongs to one area; add fixtures to your own section."""
