"""Teacher rationales for your own rows: prompt templates, answer parsers per label kind, the
``openai`` and ``ray-data`` backends, and the resumable runner behind ``mmi-ray rationales``."""
