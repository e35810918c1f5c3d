"""Exchanges: the interface the services use (base.py) and one package per adapter (bitfinex/)."""
