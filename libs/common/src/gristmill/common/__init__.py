"""Gristmill's shared library: contracts, settings, the queue, the bus, the SQL schema.

It imports no service; services meet only through what is defined here.
"""
