"""The models: their architectures, loading (hub id or local folder), fetching and test stand-ins."""
