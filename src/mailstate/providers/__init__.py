"""Back-ends behind one interface (see base.py); registered under the entry-point group `mailstate.providers`."""
