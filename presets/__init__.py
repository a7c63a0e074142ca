"""Named presets: each module defines OVERRIDES, a dict of params.py names to values.

Pick one with `preset=NAME`; command-line overrides still win over it.
"""
