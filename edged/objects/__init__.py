"""The object store shared by central and the sites: buckets, objects, blobs, HLC.

Nothing here imports another edged module except :mod:`edged.tokens` (for the
HTTP layer's principal); central imports ``edged.objects.*`` directly.
"""
