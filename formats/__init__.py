"""Bytes on disk: payload container, JPEG APP11/JUMBF embedding, .rmeta sidecar, DNG writer.

Nothing here imports torch, so `rawmeta info` stays instant.
"""
