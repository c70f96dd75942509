"""Omni message store: normalized conversations and messages behind the Unified Inbox."""
