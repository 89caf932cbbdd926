"""Shared test infrastructure: real servers started on free ports (Mosquitto, ...)."""
