"""Matching and losses: Hungarian matcher, VFL, L1/GIoU, FGL and DDF, the D-FINE criterion."""
