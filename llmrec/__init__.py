"""Contracts shared by every layer (train, export, serving); torch-free, importable anywhere."""
