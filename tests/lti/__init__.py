"""LTI 1.3 / LTI Advantage test support: a mock LMS platform (platform.py) that speaks the real protocol."""
