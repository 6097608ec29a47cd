"""Pure policy: plain data in, decisions out. No Synapse, no Twisted, no I/O, no clock."""
