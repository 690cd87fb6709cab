"""Back-ends behind one interface (base.py), registered under the entry-point group `mailstate.providers`."""
