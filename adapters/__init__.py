"""System adapters: one subpackage per external system, each with its sandbox.

Nothing here knows the engine. :mod:`adapters.registry` is the one place a kind is registered.
"""
