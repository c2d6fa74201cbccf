"""Typed configuration: model presets for the D-FINE sizes."""
