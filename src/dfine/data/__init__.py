"""Datasets, category maps and image loading."""
