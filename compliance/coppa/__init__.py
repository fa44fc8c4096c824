"""COPPA: consent and school authorization gate a child's personal information; deletion and retention remove it."""
