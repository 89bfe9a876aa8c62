"""Version of the EZThrottle SDK (read by the build and sent in the User-Agent)."""

__version__ = "2.0.0.dev0"
