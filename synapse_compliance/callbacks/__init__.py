"""Synapse glue: callbacks that gather facts, ask the core, and translate its decisions."""
