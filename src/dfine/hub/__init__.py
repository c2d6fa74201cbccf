"""Pretrained weights: the model zoo table, a safe cached downloader and Hugging Face conversion."""
