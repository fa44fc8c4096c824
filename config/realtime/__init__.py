"""The domain-neutral real-time core: rooms, sequence numbers, resume, fan-out, presence and limits.

Apps contribute event builders (`<app>/events.py`) and room names (`<app>/realtime.py`); they never
build their own transport.
"""
