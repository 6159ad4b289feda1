"""Adapters between OWS and training frameworks (imported lazily; they need optional packages)."""
