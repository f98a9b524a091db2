"""Data: the manifest format, dataset readers, mixing, shards and filtering."""
