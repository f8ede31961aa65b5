"""spot-alerter: watches SPOT feeds and makes sure rescue contacts hear about trouble."""

__version__ = "0.1.0"
