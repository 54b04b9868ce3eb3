"""Data exports and agent session logs → conversation folders (``memoryd import SOURCE``)."""
