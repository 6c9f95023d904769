"""The messages Eddy exchanges: contracts, decoding with one error vocabulary, JSON Schemas,
signatures."""
