"""Test helpers that drive layerslayer itself (``tests/harness`` never imports it).

pytest's ``pythonpath = ["tests"]`` makes this importable as ``support``::

    from support.index import build_index

``index``  ``build_index``: index pushed images into a file with ``layerslayer index``
"""
