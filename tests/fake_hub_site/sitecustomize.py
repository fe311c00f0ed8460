"""Imported by Python at start-up when this folder is on PYTHONPATH (tests only): serves the
fake hub described in $VIRNUCPRO_FAKE_HUB instead of the real Hugging Face hub."""

import json
import os

if os.environ.get("VIRNUCPRO_FAKE_HUB"):
    import fake_hub

    with open(os.environ["VIRNUCPRO_FAKE_HUB"]) as handle:
        fake_hub.install(fake_hub.FakeHub(json.load(handle)))
