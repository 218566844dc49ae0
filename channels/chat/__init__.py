"""The chat widget adapter (the customer side of a conversation)."""
