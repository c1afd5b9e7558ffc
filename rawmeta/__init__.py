"""rawmeta: keep the sRGB JPEG, drop the RAW, rebuild a faithful DNG from learned metadata.

Importing this package is cheap (no torch): the CLI's `info` relies on it.
"""
__version__ = "0.1.0"
