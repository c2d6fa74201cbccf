"""Command-line front ends (argparse). :mod:`dfine.cli.main` is the ``dfine`` console script."""
